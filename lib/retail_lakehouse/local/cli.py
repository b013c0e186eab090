"""`lakehouse workspace start|stop|status`: the local workspace as a process of its own.

`start` launches `python -m retail_lakehouse.local` in the background and waits until it
answers; it writes `LAKEHOUSE_HOME/workspace/server.json` (host, port, pid). `status` checks it,
writes a profile file of its own (`LAKEHOUSE_HOME/workspace/databrickscfg`, profile `local`) and
prints how to point the SDK and CLI at it. `~/.databrickscfg` is never touched and the token is
never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from retail_lakehouse.local._server import load_token, workspace_dir

__all__ = ["cmd_start", "cmd_status", "cmd_stop", "live_server", "write_profile"]


def server_file() -> Path:
    return workspace_dir() / "server.json"


def _answers(host: str, token: str | None, timeout: float = 2.0) -> bool:
    req = urllib.request.Request(f"{host}/api/2.0/sql/warehouses", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own 127.0.0.1 server
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def live_server() -> tuple[str, str] | None:
    """(host, token) of the workspace `server.json` names, if it answers."""
    path = server_file()
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    token = load_token(create=False)
    host = info.get("host")
    if host and token and _answers(host, token):
        return host, token
    return None


def write_profile(host: str) -> Path:
    """`LAKEHOUSE_HOME/workspace/databrickscfg` with a `[local]` profile (mode 0600)."""
    token = load_token()
    path = workspace_dir() / "databrickscfg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[local]\nhost = {host}\ntoken = {token}\nauth_type = pat\n")
    return path


def _usage(host: str) -> None:
    cfg = write_profile(host)
    print(f"local workspace: {host} (warehouse id: local-warehouse)")
    print("use it with the Databricks SDK or CLI:")
    print(f"  export DATABRICKS_CONFIG_FILE={cfg} DATABRICKS_CONFIG_PROFILE=local")
    print("or in Python: retail_lakehouse.databricks.workspace.connect('local')")


def cmd_start(port: int = 0) -> int:
    """Start the workspace in the background (no-op when one answers already)."""
    live = live_server()
    if live:
        print(f"local workspace already running at {live[0]}")
        _usage(live[0])
        return 0
    server_file().unlink(missing_ok=True)
    log = workspace_dir() / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "retail_lakehouse.local", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"local workspace exited with code {proc.returncode}; see {log}", file=sys.stderr)
            return 1
        live = live_server()
        if live:
            print(f"local workspace started (pid {proc.pid}), log: {log}")
            _usage(live[0])
            return 0
        time.sleep(0.2)
    print(f"local workspace did not answer within 60 s; see {log}", file=sys.stderr)
    return 1


def cmd_stop() -> int:
    """Stop the workspace `server.json` names."""
    path = server_file()
    if not path.is_file():
        print("no local workspace is running")
        return 0
    info = json.loads(path.read_text())
    pid = int(info.get("pid", 0))
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
    path.unlink(missing_ok=True)
    print(f"local workspace stopped (pid {pid})")
    return 0


def cmd_status() -> int:
    """Print whether the workspace runs and how to use it; 1 when it does not answer."""
    live = live_server()
    if not live:
        print("local workspace is not running; start it with `lakehouse workspace start`")
        return 1
    info = json.loads(server_file().read_text())
    print(f"local workspace running (pid {info.get('pid')})")
    _usage(live[0])
    return 0


def _alive(pid: int) -> bool:
    try:  # a child of this process (start and stop in one process): reap it, or it stays a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
