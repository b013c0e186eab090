"""`python -m retail_lakehouse.local_workspace --port N`: serve until SIGTERM (used by `lakehouse workspace start`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from retail_lakehouse.local_workspace import _server
from retail_lakehouse.local_workspace.cli import server_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retail_lakehouse.local_workspace")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bundle", default=None, help="bundle file (default databricks.yml)")
    args = parser.parse_args(argv)
    ws = _server.start(args.port, bundle_path=args.bundle, background=True)
    path = server_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": ws.host, "port": ws.port, "pid": os.getpid()}))
    tmp.replace(path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"local workspace serving on {ws.host}", flush=True)
    stop.wait()
    ws.stop()
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
    from retail_lakehouse import engine

    engine.stop_local_server()
    return 0


if __name__ == "__main__":
    sys.exit(main())
