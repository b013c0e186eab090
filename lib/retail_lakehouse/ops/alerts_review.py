"""Alerts review: what was notified, where it went, whether it arrived (read-only).

The rows of `monitoring.alerts` (one per incident: key, severity, source, summary, runbook page,
papermill command, per-destination delivery status and attempts, repeats suppressed, resolution)
and, locally, the payloads exactly as the receivers of `lakehouse alerts listen` got them (Slack
Block Kit, PagerDuty Events v2, webhook JSON, e-mail), stored under LAKEHOUSE_HOME/alerts/received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.params import Param, Parameters

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.summary import Summary

__all__ = ["PARAMETERS", "SHOWN", "AlertsReview", "payloads", "received", "review", "summary_of"]

PARAMETERS = Parameters(key=Param(required=False), limit=Param(minimum=1, maximum=1000))
COLUMNS = ["created_at", "alert_key", "severity", "source", "delivery_status", "attempts", "suppressed_count",
           "resolved_at", "summary", "destinations", "delivery", "resolve_delivery", "runbook", "command", "link"]  # fmt: skip


# The columns the notebook shows (the rest: delivery JSON, runbook, command, link, printed below it).
SHOWN = ["created_at", "alert_key", "severity", "delivery_status", "attempts", "suppressed_count", "resolved_at",
         "summary"]  # fmt: skip


def received_dir() -> Path:
    """Where the local receivers store what arrives (the running ones' folder, from receivers.json)."""
    from retail_lakehouse.alerts.config import alerts_home, receivers_file

    try:
        return Path(json.loads(receivers_file().read_text())["received"])
    except (OSError, ValueError, KeyError):
        return alerts_home() / "received"


def received(key: str = "", directory: Path | None = None) -> list[dict[str, Any]]:
    """The payloads the local receivers stored, oldest first; with `key`, those that mention it."""
    directory = directory or received_dir()
    files = sorted(directory.glob("*.json")) if directory.is_dir() else []
    out = []
    for path in files:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not key or key in json.dumps(record):
            out.append(record)
    return out


def _headline(record: dict[str, Any]) -> tuple[str, str]:
    """(event, one line) of a received payload, whatever its kind."""
    body = record.get("body") if isinstance(record.get("body"), dict) else {}
    kind = record.get("kind")
    if kind == "email":
        text = str(record.get("subject") or "")
        return ("resolve" if "RESOLVED" in text else "trigger"), text
    if kind == "pagerduty":
        event = str(body.get("event_action") or "")
        return event, str((body.get("payload") or {}).get("summary") or f"dedup_key {body.get('dedup_key')}")
    if kind == "slack":
        text = str(body.get("text") or "")
        return ("resolve" if "RESOLVED" in text else "trigger"), text
    return str(body.get("event") or ""), str(body.get("summary") or "")


def payloads(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per received payload: when, where (kind), which event, its first line (pure)."""
    import pandas as pd

    rows = []
    for r in records:
        event, line = _headline(r)
        rows.append({"received_at": r.get("received_at"), "kind": r.get("kind"), "event": event,
                     "headline": line.splitlines()[0][:160] if line else ""})  # fmt: skip
    return pd.DataFrame(rows, columns=["received_at", "kind", "event", "headline"])


@dataclass
class AlertsReview:
    """Alerts of an environment (optionally of one incident key or key prefix).

    Attributes:
        key: the key (prefix) reviewed; empty for every alert.
        alerts: rows of `monitoring.alerts`, newest first (COLUMNS).
        received: payloads the local receivers stored (env local; else empty).
        receivers: whether local receivers are running (receivers.json of a live process).
    """

    env: str
    key: str
    alerts: pd.DataFrame
    received: list[dict[str, Any]] = field(default_factory=list)
    receivers: bool = False

    @property
    def open(self) -> pd.DataFrame:
        return self.alerts[self.alerts["resolved_at"].isna()] if len(self.alerts) else self.alerts

    @property
    def undelivered(self) -> pd.DataFrame:
        return self.alerts[self.alerts["delivery_status"] != "DELIVERED"] if len(self.alerts) else self.alerts

    def verdict(self) -> list[str]:
        """What the review found, one line each."""
        if self.alerts.empty:
            return [f"no alert recorded{f' for {self.key}' if self.key else ''} in {self.env}"]
        lines = [
            f"{len(self.alerts)} alert(s), {len(self.open)} open, {len(self.undelivered)} not fully delivered"
        ]
        for r in self.alerts.head(10).itertuples():
            state = "resolved" if r.resolved_at is not None and str(r.resolved_at) != "NaT" else "OPEN"
            lines.append(f"  {r.alert_key}: {r.severity}, {r.delivery_status}, {state}, "
                         f"{int(r.suppressed_count or 0)} repeat(s) suppressed")  # fmt: skip
        if self.env == "local":
            lines.append(f"{len(self.received)} payload(s) received by the local receivers")
        return lines


def _receivers_running() -> bool:
    import os

    from retail_lakehouse.alerts.config import receivers_file

    try:
        pid = int(json.loads(receivers_file().read_text())["pid"])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, KeyError):
        return False


def review(w: WorkspaceClient, env: str, *, key: str = "", limit: int = 20) -> AlertsReview:
    """The newest `limit` alerts (of incident keys starting with `key`) and, locally, what arrived."""
    import pandas as pd

    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.core.errors import TableNotFoundError
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.databricks.statements import run_sql

    settings = load_settings(env)
    table = registry().get("monitoring.alerts").full_name(settings)
    try:
        frame = run_sql(
            w,
            f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE alert_key LIKE :prefix "
            f"ORDER BY created_at DESC LIMIT {int(limit)}",
            {"prefix": key.replace("%", "") + "%"},
            env=env,
        )
    except TableNotFoundError:  # nothing was ever alerted in this environment
        frame = pd.DataFrame(columns=COLUMNS)
    got = received(key) if settings.is_local else []
    return AlertsReview(env, key, frame, got, _receivers_running() if settings.is_local else False)


def summary_of(r: AlertsReview, *, env: str) -> Summary:
    """The notebook's summary (its last cell): which incidents are open and whether they were delivered."""
    from retail_lakehouse.ops.summary import Summary, command

    what = r.key or "every incident"
    if r.alerts.empty:
        return Summary("alerts_review", "NOTHING TO DO", f"was anyone told about {what}?",
                       f"No alert is recorded for {what} in {env}.", "monitoring.alerts: 0 rows",
                       "Nothing to do.", "Read only; nothing changed.")  # fmt: skip
    first = (r.open if len(r.open) else r.alerts).iloc[0]
    evidence = "; ".join(
        f"{a.alert_key} {a.delivery_status} ({a.attempts} attempt(s), {'open' if a.resolved_at is None or str(a.resolved_at) == 'NaT' else 'resolved'})"
        for a in r.alerts.head(5).itertuples()
    )
    if env == "local":
        evidence += f"; {len(r.received)} payload(s) received locally"
    if len(r.undelivered):
        step = ("# a destination did not take the alert: check its secret and endpoint, then resend\n"
                + command("alerts_review", env=env, key=str(r.undelivered.iloc[0]["alert_key"])))  # fmt: skip
    else:
        step = (
            f"# handle the incident with its procedure:\n{first['command']}"
            if first["command"]
            else "Nothing to do."
        )
    return Summary(
        "alerts_review",
        "DIAGNOSED",
        f"was anyone told about {what}?",
        f"{len(r.alerts)} alert(s), {len(r.open)} open, {len(r.undelivered)} not fully delivered; newest: "
        f"{first['alert_key']} ({first['severity']}): {first['summary']}",
        evidence,
        step,
        "Read only; nothing changed.",
    )
