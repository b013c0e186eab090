"""Local alert receivers (`lakehouse alerts listen`): one HTTP port on 127.0.0.1 for the Slack-,
PagerDuty- and generic-webhook-compatible paths, and an SMTP server (aiosmtpd) on 127.0.0.1.

Each message received is stored as a JSON file under LAKEHOUSE_HOME/alerts/received/; the ports
actually bound (port 0: a free one) are written to LAKEHOUSE_HOME/alerts/receivers.json, which
`alerts.send` reads for destinations with ``local_receiver: true``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from retail_lakehouse.alerts.config import LOCAL_HOST, alerts_home, receivers_file
from retail_lakehouse.core.errors import ConfigError

KINDS: tuple[str, ...] = ("slack", "pagerduty", "webhook")
_counter = itertools.count(1)


def received_dir() -> Path:
    return alerts_home() / "received"


def _store(directory: Path, kind: str, record: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    record = {"kind": kind, "received_at": stamp.isoformat(), **record}
    path = directory / f"{stamp:%Y%m%dT%H%M%S%f}-{os.getpid()}-{next(_counter):05d}-{kind}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)  # readers never see half a file
    return path


def read_received(kind: str | None = None, directory: Path | None = None) -> list[dict[str, Any]]:
    """What the receivers stored, oldest first (optionally of one kind: slack, pagerduty, webhook, email)."""
    directory = directory or received_dir()
    files = sorted(directory.glob("*.json")) if directory.is_dir() else []
    records = [json.loads(p.read_text()) for p in files]
    return [r for r in records if kind is None or r["kind"] == kind]


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        kind = self.path.strip("/").split("/", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1_000_000))
        if kind not in KINDS:
            self._reply(404, {"error": f"unknown path; use /{', /'.join(KINDS)}"})
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._reply(400, {"status": "invalid event", "message": "body is not JSON"})
            return
        # The path is not stored: a Slack-style URL carries its token there.
        _store(self.server.directory, kind, {"body": body})
        if kind == "pagerduty":
            dedup = body.get("dedup_key") if isinstance(body, dict) else None
            self._reply(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})
        elif kind == "slack":
            self._reply(200, "ok")
        else:
            self._reply(200, {"ok": True})

    def _reply(self, code: int, body: Any) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # quiet: every message is stored as a file


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, directory: Path) -> None:
        super().__init__((LOCAL_HOST, port), _Handler)
        self.directory = directory


class _MailHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        msg = message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))  # Airflow's SmtpNotifier sends HTML only
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["Subject"] or ""),
            "headers": {k: str(v) for k, v in msg.items()},
            "text": body.get_content() if body is not None else "",
        }
        _store(self.directory, "email", record)
        return "250 Message accepted for delivery"


def _smtp_controller(handler: _MailHandler, port: int) -> Any:
    from aiosmtpd.controller import Controller

    class _Controller(Controller):
        def _trigger_server(self) -> None:
            # Port 0: learn the bound port before aiosmtpd connects to itself to finish starting.
            if self.server is not None and self.server.sockets:
                self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    return _Controller(handler, hostname=LOCAL_HOST, port=port, ready_timeout=10)


class Receivers:
    """The local webhook and SMTP receivers, started together (a context manager).

    Args:
        http_port: the webhook port (0: a free one).
        smtp_port: the SMTP port (0: a free one).
        directory: where to store what is received (default LAKEHOUSE_HOME/alerts/received).
        write_ports: write receivers.json (so `alerts.send` finds them), removed on stop.
    """

    def __init__(
        self,
        http_port: int = 0,
        smtp_port: int = 0,
        *,
        directory: Path | None = None,
        write_ports: bool = True,
    ) -> None:
        self.directory = directory or received_dir()
        self.write_ports = write_ports
        self._ports = (http_port, smtp_port)
        self._http: _HttpServer | None = None
        self._smtp: Any = None
        self.http_port = 0
        self.smtp_port = 0

    def start(self) -> Receivers:
        """Bind both servers on 127.0.0.1.

        Raises:
            ConfigError: a port is taken (choose another in `alerts.receivers` or pass 0).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
        try:
            self._http = _HttpServer(self._ports[0], self.directory)
        except OSError as exc:
            raise ConfigError(
                f"alert webhook receiver: cannot listen on {LOCAL_HOST}:{self._ports[0]}: {exc}"
            ) from None
        self.http_port = self._http.server_address[1]
        threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="alert-webhook-receiver",
            daemon=True,
        ).start()
        try:
            self._smtp = _smtp_controller(_MailHandler(self.directory), self._ports[1])
            self._smtp.start()
        except Exception as exc:
            self.stop()
            raise ConfigError(
                f"alert SMTP receiver: cannot listen on {LOCAL_HOST}:{self._ports[1]}: {exc}"
            ) from None
        self.smtp_port = int(self._smtp.port)
        if self.write_ports:
            info = {"host": LOCAL_HOST, "http_port": self.http_port, "smtp_port": self.smtp_port, "pid": os.getpid(),
                    "received": str(self.directory), "started_at": time.time()}  # fmt: skip
            path = receivers_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(info, indent=2))
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._smtp is not None:
            with contextlib.suppress(Exception):  # already stopped, or never started
                self._smtp.stop()
            self._smtp = None
        if self.write_ports:
            try:
                info = json.loads(receivers_file().read_text())
                if info.get("pid") == os.getpid() and info.get("http_port") == self.http_port:
                    receivers_file().unlink()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> Receivers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> dict[str, str]:
        base = f"http://{LOCAL_HOST}:{self.http_port}"
        return {**{k: f"{base}/{k}" for k in KINDS}, "smtp": f"smtp://{LOCAL_HOST}:{self.smtp_port}"}
