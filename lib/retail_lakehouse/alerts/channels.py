"""Notifications per destination type (Slack Block Kit, PagerDuty Events API v2, generic JSON
webhook, e-mail) and their delivery, retried with backoff and bounded by timeouts."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import urlsplit

from retail_lakehouse.alerts.config import (
    LOCAL_HOST,
    PAGERDUTY_EVENTS_URL,
    AlertsConfig,
    Destination,
    receiver_ports,
)
from retail_lakehouse.alerts.model import Alert, Delivery
from retail_lakehouse.alerts.routing import backoff_delays
from retail_lakehouse.alerts.secrets import REDACT, SecretReader
from retail_lakehouse.core.errors import AlertDeliveryError

Event = Literal["trigger", "resolve"]
_EMOJI = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Notification:
    """One message about an incident: its first notification (``trigger``) or its end (``resolve``)."""

    event: Event
    alert: Alert
    env: str
    alert_id: str
    suppressed_count: int = 0


def _title(n: Notification) -> str:
    if n.event == "resolve":
        return f"RESOLVED [{n.env}] {n.alert.summary}"
    return f"{n.alert.severity.upper()} [{n.env}] {n.alert.summary}"


def slack_payload(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: a `text` fallback and Block Kit blocks."""
    a = n.alert
    emoji = ":white_check_mark:" if n.event == "resolve" else _EMOJI[a.severity]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _title(n)[:150]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{emoji} {a.severity}"},
                {"type": "mrkdwn", "text": f"*Source*\n{a.source}"},
                {"type": "mrkdwn", "text": f"*Incident*\n`{a.key}`"},
                {"type": "mrkdwn", "text": f"*Environment*\n{n.env}"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": a.summary[:3000]}},
    ]
    links = [f"<{url}|{label}>" for label, url in (("Run", a.link), ("Runbook", a.runbook)) if url]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  |  ".join(links)}]})
    if a.command and n.event == "trigger":
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Procedure*\n```{a.command}```"}}
        )
    return {"text": f"{emoji} {_title(n)}", "blocks": blocks}


def pagerduty_payload(n: Notification, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: trigger (with payload and links) or resolve, on dedup_key = the key."""
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": n.event, "dedup_key": n.alert.key}
    if n.event == "resolve":
        return body
    a = n.alert
    body["payload"] = {
        "summary": f"[{n.env}] {a.summary}"[:1024],
        "source": f"retail_lakehouse/{n.env}",
        "severity": a.severity,
        "component": a.source,
        "group": n.env,
        "class": a.source,
        "custom_details": {
            "alert_id": n.alert_id,
            "runbook": a.runbook,
            "command": a.command,
            "link": a.link,
        },
    }
    body["links"] = [
        {"href": url, "text": label} for label, url in (("Run", a.link), ("Runbook", a.runbook)) if url
    ]
    return body


def webhook_payload(n: Notification) -> dict[str, Any]:
    """The generic webhook's JSON: the event and every field of the alert."""
    a = n.alert
    return {
        "event": n.event,
        "env": n.env,
        "alert_id": n.alert_id,
        "key": a.key,
        "severity": a.severity,
        "source": a.source,
        "summary": a.summary,
        "link": a.link,
        "runbook": a.runbook,
        "command": a.command,
        "suppressed_count": n.suppressed_count,
    }


def email_message(n: Notification, sender: str, to: list[str]) -> EmailMessage:
    """A plain-text e-mail: subject = severity, env and summary; body = the fields and the procedure."""
    a = n.alert
    msg = EmailMessage()
    msg["Subject"] = _title(n)[:200]
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["X-Lakehouse-Incident"] = a.key
    lines = [
        a.summary,
        "",
        f"incident:  {a.key}",
        f"severity:  {a.severity}",
        f"source:    {a.source}",
        f"env:       {n.env}",
    ]
    lines += [f"{label:<10} {value}" for label, value in (("run:", a.link), ("runbook:", a.runbook)) if value]
    if a.command and n.event == "trigger":
        lines += ["", "procedure:", f"  {a.command}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _post_json(name: str, url: str, body: dict[str, Any], timeout: float, headers: dict[str, str]) -> str:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    # Loopback receivers are reached directly, whatever proxy the environment sets.
    handlers = [urllib.request.ProxyHandler({})] if urlsplit(url).hostname in _LOOPBACK else []
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        retryable = exc.code == 429 or exc.code >= 500
        raise AlertDeliveryError(name, f"HTTP {exc.code} {exc.reason}", retryable=retryable) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertDeliveryError(name, f"{type(exc).__name__}: {reason}", retryable=True) from None


def _send_mail(
    name: str,
    dest: Destination,
    msg: EmailMessage,
    host: str,
    port: int,
    timeout: float,
    password: str | None,
) -> str:
    opts = dest.options
    try:
        smtp_class = smtplib.SMTP_SSL if opts.get("ssl") else smtplib.SMTP
        with smtp_class(host, port, timeout=timeout) as smtp:
            if opts.get("starttls"):
                smtp.starttls()
            if opts.get("username") and password:
                smtp.login(opts["username"], password)
            refused = smtp.send_message(msg)
        if refused:
            raise AlertDeliveryError(name, f"recipients refused: {', '.join(refused)}", retryable=False)
        return f"SMTP accepted for {len(dest.options['to'])} recipient(s)"
    except smtplib.SMTPResponseException as exc:
        raise AlertDeliveryError(name, f"SMTP {exc.smtp_code}", retryable=exc.smtp_code < 500) from None
    except (smtplib.SMTPException, OSError, TimeoutError) as exc:
        raise AlertDeliveryError(name, f"{type(exc).__name__}: {exc}", retryable=True) from None


def _attempt(dest: Destination, n: Notification, config: AlertsConfig, secrets: SecretReader) -> str:
    """One delivery attempt; raises AlertDeliveryError."""
    timeout = config.retry.timeout_seconds
    main = {k: secrets.read(dest.name, ref) for k, ref in dest.secrets.items()}
    http_port, smtp_port = receiver_ports(config) if dest.local_receiver else (0, 0)
    local = f"http://{LOCAL_HOST}:{http_port}/{dest.type}"
    if dest.type == "email":
        host, port = (
            (LOCAL_HOST, smtp_port)
            if dest.local_receiver
            else (dest.options["host"], dest.options.get("port", 587))
        )
        msg = email_message(n, dest.options["sender"], list(dest.options["to"]))
        return _send_mail(dest.name, dest, msg, host, port, timeout, main.get("password"))
    if dest.type == "pagerduty":
        url = (
            local + "/v2/enqueue"
            if dest.local_receiver
            else dest.options.get("events_url", PAGERDUTY_EVENTS_URL)
        )
        return _post_json(
            dest.name, url, pagerduty_payload(n, main.get("routing_key", "local-routing-key")), timeout, {}
        )
    url = main.get("url") or local
    if dest.type == "slack":
        body = slack_payload(n)
        if dest.options.get("channel"):
            body["channel"] = dest.options["channel"]
        return _post_json(dest.name, url, body, timeout, {})
    return _post_json(
        dest.name,
        url,
        webhook_payload(n),
        timeout,
        {str(k): str(v) for k, v in dest.options.get("headers", {}).items()},
    )


def deliver(
    dest: Destination,
    n: Notification,
    config: AlertsConfig,
    secrets: SecretReader,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Deliver one notification to one destination: up to `retry.attempts` attempts, waiting
    `backoff_delays` between them; a permanent error (HTTP 4xx, missing secret) stops at once. Never raises."""
    started = time.monotonic()
    delays = backoff_delays(config.retry.attempts, config.retry.backoff_seconds)
    detail, attempt = "", 0
    for attempt in range(1, config.retry.attempts + 1):
        try:
            answer = _attempt(dest, n, config, secrets)
            return Delivery(dest.name, "DELIVERED", attempt, REDACT(answer), time.monotonic() - started)
        except AlertDeliveryError as exc:
            detail = REDACT(exc)
            if not exc.retryable:
                break
        except Exception as exc:  # a bug or an unexpected library error: recorded, never raised
            detail = REDACT(f"{type(exc).__name__}: {exc}")
            break
        if attempt <= len(delays):
            sleep(delays[attempt - 1])
    return Delivery(dest.name, "FAILED", attempt, detail[:1000], time.monotonic() - started)


def deliver_all(
    names: list[str], n: Notification, config: AlertsConfig, secrets: SecretReader
) -> tuple[Delivery, ...]:
    """Deliver to several destinations at once (one thread each), in the order of `names`."""
    if not names:
        return ()
    known = [config.destinations[x] for x in names if x in config.destinations]
    missing = [
        Delivery(x, "FAILED", 0, "not in alerts.destinations") for x in names if x not in config.destinations
    ]
    with ThreadPoolExecutor(max_workers=max(len(known), 1), thread_name_prefix="alert-delivery") as pool:
        done = list(pool.map(lambda d: deliver(d, n, config, secrets), known))
    by_name = {d.destination: d for d in [*done, *missing]}
    return tuple(by_name[x] for x in names)
