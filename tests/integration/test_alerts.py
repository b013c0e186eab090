"""Alerts end to end on 127.0.0.1: the local receivers (webhook + aiosmtpd) in-process, real
deliveries, rows in `monitoring.alerts`, suppression, resolve, an unreachable destination, the CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from retail_lakehouse import alerts
from retail_lakehouse.alerts import store
from retail_lakehouse.core.errors import ConfigError
from retail_lakehouse.sandbox.alert_receivers import Receivers, read_received

ROOT = Path(__file__).resolve().parents[2]
SLACK_TOKEN = "T0SECRET/B0SECRET/xoxSlackS3cretToken"
ROUTING_KEY = "pd-routing-S3cret-0123456789"
SECRETS = (SLACK_TOKEN, "xoxSlackS3cretToken", ROUTING_KEY)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alerts_section(dead_port: int) -> dict:
    return {
        "suppress_minutes": 60,
        "wait_seconds": 30,
        "retry": {"attempts": 3, "backoff_seconds": 0.1, "timeout_seconds": 2},
        "receivers": {"http_port": 0, "smtp_port": 0},
        "destinations": {
            "slack": {"type": "slack", "url_env": "LAKEHOUSE_TEST_SLACK_URL"},
            "pagerduty": {
                "type": "pagerduty",
                "local_receiver": True,
                "routing_key_env": "LAKEHOUSE_TEST_PD_KEY",
            },
            "webhook": {"type": "webhook", "local_receiver": True},
            "email": {
                "type": "email",
                "local_receiver": True,
                "sender": "lakehouse@localhost",
                "to": ["oncall@localhost"],
            },
            "dead": {"type": "webhook", "url_env": "LAKEHOUSE_TEST_DEAD_URL"},
        },
        "routes": [
            {"severity": ["critical"], "destinations": ["pagerduty", "slack", "email", "webhook"]},
            {"source": ["freshness"], "destinations": ["dead"]},
        ],
    }


@pytest.fixture(scope="module")
def receivers(tmp_path_factory):
    """Receivers on free ports, a params dir whose local.yaml routes to them, the secrets in the environment."""
    mp = pytest.MonkeyPatch()
    params = tmp_path_factory.mktemp("params")
    raw = yaml.safe_load((ROOT / "params" / "local.yaml").read_text())
    raw["alerts"] = alerts_section(closed_port())
    (params / "local.yaml").write_text(yaml.safe_dump(raw))
    mp.setenv("LAKEHOUSE_PARAMS_DIR", str(params))
    received = tmp_path_factory.mktemp("received")
    with Receivers(0, 0, directory=received) as r:
        mp.setenv("LAKEHOUSE_TEST_SLACK_URL", f"http://127.0.0.1:{r.http_port}/slack/{SLACK_TOKEN}")
        mp.setenv("LAKEHOUSE_TEST_PD_KEY", ROUTING_KEY)
        mp.setenv("LAKEHOUSE_TEST_DEAD_URL", f"http://127.0.0.1:{closed_port()}/hook/{SLACK_TOKEN}")
        yield r
        alerts.flush(60)
    mp.undo()


def incident(key: str, severity: str = "critical", source: str = "job") -> alerts.Alert:
    return alerts.Alert(key=key, severity=severity, source=source, summary=f"{key} failed",
                        link="http://127.0.0.1/run/7", runbook="book/job_failure_triage.md",
                        command="papermill ops_notebooks/job_failure_triage.ipynb out.ipynb -p job_run_id 7")  # fmt: skip


def row(alert_id: str) -> dict:
    rows = [r for r in store.recent("local", 1000) if r["alert_id"] == alert_id]
    assert len(rows) == 1
    return rows[0]


def received(r: Receivers, kind: str, key: str) -> list[dict]:
    out = []
    for rec in read_received(kind, r.directory):
        body = rec.get("body") or {}
        text = json.dumps(rec)
        if key in text or (isinstance(body, dict) and body.get("dedup_key") == key):
            out.append(rec)
    return out


def no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_an_alert_reaches_every_destination_and_is_recorded(receivers, caplog):
    caplog.set_level(logging.DEBUG)
    outcome = alerts.send(incident("job:e2e"), env="local", wait=60)
    assert outcome.action == "sent" and outcome.status == "DELIVERED", outcome
    assert [d.destination for d in outcome.deliveries] == ["pagerduty", "slack", "email", "webhook"]

    (slack,) = received(receivers, "slack", "job:e2e")
    assert slack["body"]["blocks"][0]["type"] == "header" and "job:e2e failed" in slack["body"]["text"]
    (pd,) = received(receivers, "pagerduty", "job:e2e")
    assert pd["body"]["event_action"] == "trigger" and pd["body"]["dedup_key"] == "job:e2e"
    assert pd["body"]["payload"]["severity"] == "critical" and pd["body"]["routing_key"] == ROUTING_KEY
    (hook,) = received(receivers, "webhook", "job:e2e")
    assert hook["body"]["event"] == "trigger" and hook["body"]["command"].startswith(
        "papermill ops_notebooks/"
    )
    (mail,) = received(receivers, "email", "job:e2e")
    assert mail["subject"] == "CRITICAL [local] job:e2e failed" and mail["rcpt_tos"] == ["oncall@localhost"]

    r = row(outcome.alert_id)
    assert (r["alert_key"], r["severity"], r["source"], r["delivery_status"]) == (
        "job:e2e",
        "critical",
        "job",
        "DELIVERED",
    )
    assert json.loads(r["destinations"]) == ["pagerduty", "slack", "email", "webhook"]
    assert {k: v["status"] for k, v in json.loads(r["delivery"]).items()} == dict.fromkeys(
        json.loads(r["destinations"]), "DELIVERED"
    )
    assert r["attempts"] == 4 and r["suppressed_count"] == 0 and r["resolved_at"] is None and r["created_at"]
    no_secret(json.dumps(r, default=str))
    no_secret(caplog.text + repr(outcome))


def test_a_repeat_is_suppressed_and_counted_then_resolve_sends_pagerduty_resolve(receivers):
    first = alerts.send(incident("job:repeat"), env="local", wait=60)
    assert first.action == "sent"
    again = [alerts.send(incident("job:repeat"), env="local", wait=60) for _ in range(2)]
    assert [o.action for o in again] == ["suppressed", "suppressed"]
    assert again[-1].suppressed_count == 2 and again[-1].alert_id == first.alert_id
    assert len(received(receivers, "slack", "job:repeat")) == 1
    assert row(first.alert_id)["suppressed_count"] == 2

    done = alerts.resolve("job:repeat", env="local", wait=60)
    assert done.action == "resolved" and done.status == "DELIVERED", done
    pd = [rec["body"] for rec in received(receivers, "pagerduty", "job:repeat")]
    assert [b["event_action"] for b in pd] == ["trigger", "resolve"]
    assert pd[1] == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "job:repeat"}
    assert "RESOLVED" in received(receivers, "slack", "job:repeat")[-1]["body"]["text"]
    r = row(first.alert_id)
    assert (
        r["resolved_at"] is not None
        and json.loads(r["resolve_delivery"])["pagerduty"]["status"] == "DELIVERED"
    )
    assert alerts.resolve("job:repeat", env="local", wait=60).action == "nothing_open"
    # resolved: the next failure is a new incident
    assert alerts.send(incident("job:repeat"), env="local", wait=60).action == "sent"


def test_an_unreachable_destination_is_a_recorded_failure_within_bounded_time(receivers, caplog, capsys):
    from retail_lakehouse import cli

    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    outcome = alerts.send(incident("freshness:gold.fact_sales", "warning", "freshness"), env="local", wait=60)
    elapsed = time.monotonic() - started
    assert outcome.action == "sent" and outcome.status == "FAILED", outcome
    (d,) = outcome.deliveries
    assert (d.destination, d.status, d.attempts) == ("dead", "FAILED", 3)
    assert "Connection refused" in d.detail or "Errno" in d.detail
    assert elapsed < 15  # 3 attempts, 0.1 + 0.2 s of backoff, refused at once; the row write included
    r = row(outcome.alert_id)
    assert r["delivery_status"] == "FAILED" and json.loads(r["delivery"])["dead"]["attempts"] == 3
    no_secret(caplog.text + json.dumps(r, default=str) + repr(outcome))
    assert "failed after 3 attempt(s)" in caplog.text

    assert cli.main(["alerts", "list", "--limit", "50"]) == 0
    out = capsys.readouterr().out
    assert "freshness:gold.fact_sales" in out and "FAILED" in out
    no_secret(out)


def test_send_does_not_block_beyond_its_wait(receivers):
    started = time.monotonic()
    outcome = alerts.send(incident("stream_lag:pos", "warning", "freshness"), env="local", wait=0)
    assert time.monotonic() - started < 1.0
    assert outcome.action in ("pending", "sent")
    assert alerts.flush(60)
    rows = [r for r in store.recent("local", 1000) if r["alert_key"] == "stream_lag:pos"]
    assert len(rows) == 1 and rows[0]["delivery_status"] == "FAILED"


def test_send_test_cli_delivers_and_prints_no_secret(receivers, capsys):
    from retail_lakehouse import cli

    code = cli.main(
        ["alerts", "send-test", "--destination", "slack", "--destination", "pagerduty", "--wait", "60"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "DELIVERED" in out and "slack" in out and "pagerduty" in out
    no_secret(out)


def test_a_malformed_config_raises_config_error_and_send_still_records(
    receivers, tmp_path, monkeypatch, caplog
):
    raw = yaml.safe_load((ROOT / "params" / "local.yaml").read_text())
    raw["alerts"] = {"destinations": {"x": {"type": "sms"}, "y": {"type": "slack", "url": "http://h/SECRETURL"}},
                     "routes": [{"destinations": ["z"]}]}  # fmt: skip
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LAKEHOUSE_PARAMS_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        alerts.load_config("local")
    assert "4 problem(s)" in str(err.value)
    for part in (
        "destinations.x.type",
        "destinations.y: `url` is a secret",
        "destinations.y: needs `url_env`",
        "routes[0].destinations: unknown 'z'",
    ):
        assert part in str(err.value)
    assert "SECRETURL" not in str(err.value)

    caplog.set_level(logging.WARNING)
    outcome = alerts.send(incident("job:misconfigured", "error"), env="local", wait=60)
    assert outcome.action == "sent" and outcome.status == "FAILED" and "alerts config" in outcome.problems[0]
    r = row(outcome.alert_id)
    assert r["delivery_status"] == "FAILED" and "problem(s)" in json.loads(r["delivery"])["config"]
    assert "alerts config" in caplog.text


def test_lakehouse_alerts_listen_serves_and_writes_its_ports(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "LAKEHOUSE_PARAMS_DIR": str(ROOT / "params")}
    cmd = [
        sys.executable,
        "-m",
        "retail_lakehouse.cli",
        "alerts",
        "listen",
        "--http-port",
        "0",
        "--smtp-port",
        "0",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports = home / "alerts" / "receivers.json"
        deadline = time.monotonic() + 30
        while not ports.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        info = json.loads(ports.read_text())
        body = json.dumps({"hello": "receiver"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{info['http_port']}/webhook/x", data=body, method="POST"
        )
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            request, timeout=5
        ) as response:
            assert response.status == 200
        stored = read_received("webhook", home / "alerts" / "received")
        assert stored[0]["body"] == {"hello": "receiver"}
        with socket.create_connection(("127.0.0.1", info["smtp_port"]), timeout=5) as s:
            assert s.recv(100).startswith(b"220")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert not (home / "alerts" / "receivers.json").exists()


def test_a_databricks_secret_is_read_through_the_sdk_and_never_shown(receivers, monkeypatch):
    """Outside `local`, `url_secret: {scope, key}` is read with w.secrets.get_secret (real SDK, a loopback API)."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.alerts.channels import Notification, deliver
    from retail_lakehouse.alerts.config import parse_config
    from retail_lakehouse.alerts.secrets import SecretReader

    secret_url = f"http://127.0.0.1:{receivers.http_port}/slack/scoped/{SLACK_TOKEN}"
    asked = []

    class SecretsApi(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            asked.append(self.path)
            ok = self.path.startswith("/api/2.0/secrets/get")
            body = {"key": "slack", "value": base64.b64encode(secret_url.encode()).decode()} if ok else {}
            data = json.dumps(body if ok else {"error_code": "NOT_FOUND", "message": "not here"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    for var in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    api = ThreadingHTTPServer(("127.0.0.1", 0), SecretsApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        w = WorkspaceClient(host=f"http://127.0.0.1:{api.server_address[1]}", token="dapi-loopback")
        config = parse_config(
            {"destinations": {"slack": {"type": "slack", "url_secret": {"scope": "retail-dev", "key": "slack"}}}}, "dev"
        )
        n = Notification("trigger", incident("job:scoped"), "dev", "a1")
        d = deliver(config.destinations["slack"], n, config, SecretReader("dev", w))
    finally:
        api.shutdown()
        api.server_close()
    assert d.status == "DELIVERED", d
    assert any(p.startswith("/api/2.0/secrets/get") and "scope=retail-dev" in p for p in asked)
    assert received(receivers, "slack", "job:scoped")
    no_secret(repr(d) + repr(config))
