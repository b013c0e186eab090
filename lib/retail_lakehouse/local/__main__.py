"""`python -m retail_lakehouse.local --port N`: serve until SIGTERM (used by `lakehouse workspace start`).

With `--idle-minutes N` the server also stops after N minutes without a request and without a job
run in progress (the workspace `workspace.connect("local")` starts for later notebook runs does so).
It stops, too, when `server.json` no longer names it (another server took its place, or the
lakehouse home was removed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from retail_lakehouse.local import _server
from retail_lakehouse.local.cli import server_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retail_lakehouse.local")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bundle", default=None, help="bundle file (default databricks.yml)")
    parser.add_argument("--idle-minutes", type=float, default=0, help="stop after this long without requests (0: never)")
    args = parser.parse_args(argv)
    ws = _server.start(args.port, bundle_path=args.bundle, background=True)
    last_request = _track_requests(ws)
    path = server_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": ws.host, "port": ws.port, "pid": os.getpid()}))
    tmp.replace(path)
    # Start the engine and register the tables now, not at the first statement a client waits for.
    threading.Thread(target=_warm_engine, args=(ws.env,), name="engine-warm-up", daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"local workspace serving on {ws.host}", flush=True)
    while not stop.wait(5.0):
        busy = any(launch.thread.is_alive() for launch in list(ws.jobs.launches.values()))
        if busy:
            last_request[0] = time.monotonic()
        elif not _named_in(path):
            print("server.json no longer names this server: stopping", flush=True)
            break
        elif args.idle_minutes and time.monotonic() - last_request[0] > args.idle_minutes * 60:
            print(f"no request for {args.idle_minutes:g} minutes: stopping", flush=True)
            break
    ws.stop()
    if _named_in(path):
        path.unlink(missing_ok=True)
    from retail_lakehouse import engine

    engine.stop_local_server()
    return 0


def _track_requests(ws: _server.LocalWorkspace) -> list[float]:
    """The monotonic time of the latest request (a one-item list the handler updates)."""
    last = [time.monotonic()]
    base = ws._httpd.RequestHandlerClass

    class Tracked(base):  # type: ignore[misc, valid-type]
        def handle_one_request(self) -> None:
            last[0] = time.monotonic()
            super().handle_one_request()
            last[0] = time.monotonic()

    ws._httpd.RequestHandlerClass = Tracked
    return last


def _named_in(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("pid") == os.getpid()
    except (OSError, ValueError):
        return False


def _warm_engine(env: str) -> None:
    from retail_lakehouse import engine

    try:
        engine.get_spark(env)
    except Exception as exc:  # noqa: BLE001 - the first statement reports it properly
        print(f"engine warm-up failed: {exc}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
