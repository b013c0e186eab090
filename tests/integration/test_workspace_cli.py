"""`lakehouse workspace start|status|stop`: the local workspace as a process of its own."""

from __future__ import annotations

import json
import stat

import pytest

pytestmark = pytest.mark.slow


def test_start_status_stop_standalone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    from retail_lakehouse.databricks.workspace import _local_client
    from retail_lakehouse.local import cli

    assert cli.cmd_status() == 1
    try:
        assert cli.cmd_start(0) == 0
        info = json.loads((tmp_path / "workspace" / "server.json").read_text())
        assert info["host"].startswith("http://127.0.0.1:") and info["pid"] > 0
        assert cli.cmd_status() == 0
        out = capsys.readouterr().out
        cfg = tmp_path / "workspace" / "databrickscfg"
        token = (tmp_path / "workspace" / ".token").read_text().strip()
        assert f"export DATABRICKS_CONFIG_FILE={cfg} DATABRICKS_CONFIG_PROFILE=local" in out
        assert token not in out  # never printed
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "workspace" / ".token").stat().st_mode) == 0o600
        assert "[local]" in cfg.read_text() and info["host"] in cfg.read_text()
        host, tok = cli.live_server()
        assert [x.id for x in _local_client(host, tok).warehouses.list()] == ["local-warehouse"]
        assert cli.cmd_start(0) == 0  # already running: no second server
        assert json.loads((tmp_path / "workspace" / "server.json").read_text())["pid"] == info["pid"]
    finally:
        cli.cmd_stop()
    assert not (tmp_path / "workspace" / "server.json").exists()
    assert cli.live_server() is None
