"""The local workspace a notebook run starts is reused by the next runs, replaced when the code changes,
and stops by itself when idle (what makes ops notebooks fast from a terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.ops._helpers import ROOT

QUERY = (
    "from retail_lakehouse.databricks.workspace import connect\n"
    "from retail_lakehouse.databricks.statements import run_sql\n"
    "print(int(run_sql(connect('local'), 'SELECT 41 + 1 AS x')['x'].iloc[0]))\n"
)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "LAKEHOUSE_WORKSPACE_AUTOSTART")}
    return {**env, "LAKEHOUSE_HOME": str(home), **extra}


def _run(env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", QUERY], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    return proc.stdout.strip().splitlines()[-1]


def _server_pid(home: Path) -> int:
    return json.loads((home / "workspace" / "server.json").read_text())["pid"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(env: dict[str, str]) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "lakehouse"), "workspace", "stop"], env=env, capture_output=True,
                   check=False)


def test_started_once_reused_and_replaced_when_the_code_changes(tmp_path):
    env = _env(tmp_path)
    try:
        assert _run(env) == "42"
        first = _server_pid(tmp_path)
        assert _alive(first)
        assert _run(env) == "42"
        assert _server_pid(tmp_path) == first  # the second process used the running workspace
        started = tmp_path / "workspace" / "autostart.json"
        info = json.loads(started.read_text())
        started.write_text(json.dumps({**info, "stamp": "code of yesterday"}))
        assert _run(env) == "42"
        second = _server_pid(tmp_path)
        assert second != first
        deadline = time.monotonic() + 20
        while _alive(first) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(first)
    finally:
        _stop(env)


def test_idle_workspace_stops_by_itself_and_autostart_can_be_off(tmp_path):
    env = _env(tmp_path, LAKEHOUSE_WORKSPACE_IDLE_MINUTES="0.02")
    try:
        assert _run(env) == "42"
        pid = _server_pid(tmp_path)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(pid)
        assert not (tmp_path / "workspace" / "server.json").exists()
        assert _run(_env(tmp_path, LAKEHOUSE_WORKSPACE_AUTOSTART="0")) == "42"  # served in-process
        assert not (tmp_path / "workspace" / "server.json").exists()
    finally:
        _stop(env)
