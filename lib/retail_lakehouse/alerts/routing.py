"""Pure decisions: where an alert goes (`route`), whether a repeat is sent or counted (`decide`), and
how long to wait between delivery attempts (`backoff_delays`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from retail_lakehouse.alerts.config import AlertsConfig, Route
from retail_lakehouse.alerts.model import Alert

Decision = Literal["notify", "suppress"]


@dataclass(frozen=True)
class OpenIncident:
    """The newest unresolved row of an incident key in `monitoring.alerts`.

    Attributes:
        alert_id: the row.
        created_at: when it was notified (aware, UTC).
        suppressed_count: repeats counted on it so far.
        destinations: where it was sent (a resolve goes there too).
    """

    alert_id: str
    created_at: datetime
    suppressed_count: int = 0
    destinations: tuple[str, ...] = ()


def route(alert: Alert, routes: Sequence[Route]) -> list[str]:
    """The destinations of an alert: those of every route it matches, in order of first mention.

    A route matches when its `severity` list is empty or holds the alert's severity, and the same for
    `source`. No match: no destination (the alert is still recorded).
    """
    out: list[str] = []
    for r in routes:
        if (not r.severity or alert.severity in r.severity) and (not r.source or alert.source in r.source):
            out += [d for d in r.destinations if d not in out]
    return out


def decide(open_incident: OpenIncident | None, now: datetime, window: timedelta) -> Decision:
    """``suppress`` a repeat of an open incident notified less than `window` ago, else ``notify``.

    After the window a still-open incident is notified again (a reminder, a new row); a resolved one
    starts afresh.
    """
    if open_incident is None:
        return "notify"
    return "suppress" if now - open_incident.created_at < window else "notify"


def backoff_delays(attempts: int, base: float) -> list[float]:
    """Waits between `attempts` attempts, doubling from `base`: 3 attempts, 0.5 s -> [0.5, 1.0]."""
    return [base * 2**i for i in range(max(attempts - 1, 0))]


def routing_table(configs: Sequence[AlertsConfig]) -> str:
    """Where each severity goes in each environment, as a Markdown table (the monitoring chapter's).

    One row per severity (a `job` alert), and one for a `cost` warning; one column per config.
    """
    rows = [("critical", "critical", "job"), ("error", "error", "job"), ("warning", "warning", "job"),
            ("info", "info", "job"), ("cost (a warning)", "warning", "cost")]  # fmt: skip
    out = ["| severity | " + " | ".join(c.env for c in configs) + " |", "| --- |" + " --- |" * len(configs)]
    for label, severity, source in rows:
        probe = Alert(key="routing:probe", severity=severity, source=source, summary="probe")  # type: ignore[arg-type]
        cells = [", ".join(route(probe, c.routes)) or "(recorded only)" for c in configs]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)
