"""The `monitoring.alerts` table: one row per notified incident, written through `engine.writes`
(MERGE on `alert_id`: a suppressed repeat or a resolve updates the row)."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from retail_lakehouse.alerts.model import Alert, Delivery, row_status
from retail_lakehouse.alerts.routing import OpenIncident
from retail_lakehouse.core.tables import registry

TABLE = "monitoring.alerts"
COLUMNS = (
    "alert_id", "alert_key", "env", "severity", "source", "summary", "link", "runbook", "command", "destinations",
    "delivery", "delivery_status", "attempts", "suppressed_count", "created_at", "last_seen_at", "resolved_at",
    "resolve_delivery", "updated_at",
)  # fmt: skip


def _schema(columns: tuple[str, ...]) -> str:
    types = registry().get(TABLE).columns
    return ", ".join(f"`{c}` {types[c]}" for c in columns)


def _utc(value: Any) -> datetime:
    """Spark returns naive timestamps in the session's time zone (UTC here and on Databricks jobs)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def delivery_json(deliveries: tuple[Delivery, ...]) -> str:
    return json.dumps({d.destination: d.to_json() for d in deliveries}, sort_keys=True)


def new_row(
    alert_id: str,
    alert: Alert,
    env: str,
    deliveries: tuple[Delivery, ...],
    now: datetime,
    *,
    config_problem: str | None = None,
) -> dict[str, Any]:
    """A row for a notified alert (a config problem makes it a FAILED row with that reason)."""
    delivery = delivery_json(deliveries) if config_problem is None else json.dumps({"config": config_problem})
    return {
        "alert_id": alert_id, "alert_key": alert.key, "env": env, "severity": alert.severity, "source": alert.source,
        "summary": alert.summary, "link": alert.link, "runbook": alert.runbook, "command": alert.command,
        "destinations": json.dumps([d.destination for d in deliveries]), "delivery": delivery,
        "delivery_status": "FAILED" if config_problem else row_status(deliveries),
        "attempts": sum(d.attempts for d in deliveries), "suppressed_count": 0, "created_at": now,
        "last_seen_at": now, "resolved_at": None, "resolve_delivery": None, "updated_at": now,
    }  # fmt: skip


# One MERGE at a time in a process (they share the session's source view); across processes a
# commit that lost the race to another writer is retried.
_IO_LOCK = threading.Lock()
_CONFLICT = re.compile(r"concurrent|conflict|commit failed|transaction", re.IGNORECASE)
MERGE_ATTEMPTS = 5


def merge(rows: list[dict[str, Any]], env: str) -> None:
    """MERGE rows (all with the same columns) into the table on alert_id.

    Raises:
        LakehouseError: the write failed (the caller logs it).
    """
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes

    columns = tuple(c for c in COLUMNS if c in rows[0])
    with _IO_LOCK:
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            try:
                spark = engine.get_spark(env)
                df = spark.createDataFrame([tuple(r[c] for c in columns) for r in rows], _schema(columns))
                writes.merge_into(df, TABLE, env=env, assume_unique=True)
                return
            except Exception as exc:
                if attempt == MERGE_ATTEMPTS or not _CONFLICT.search(str(exc)):
                    raise
                time.sleep(0.1 * 2 ** (attempt - 1) + random.random() * 0.1)


def open_incidents(key: str, env: str) -> list[tuple[OpenIncident, dict[str, Any]]]:
    """Unresolved rows of an incident key, newest first, with the row's fields."""
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes

    with _IO_LOCK:
        full = writes.ensure_table(TABLE, env=env)
        rows = engine.sql(
            f"SELECT * FROM {full} WHERE alert_key = :key AND resolved_at IS NULL ORDER BY created_at DESC",
            {"key": key},
            env=env,
        ).collect()
    out = []
    for r in rows:
        d = r.asDict()
        incident = OpenIncident(
            alert_id=d["alert_id"],
            created_at=_utc(d["created_at"]),
            suppressed_count=int(d["suppressed_count"] or 0),
            destinations=tuple(json.loads(d["destinations"] or "[]")),
        )
        out.append((incident, d))
    return out


def recent(env: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest rows, newest first (the table is created empty when missing)."""
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes

    full = writes.ensure_table(TABLE, env=env)
    frame = engine.sql(f"SELECT * FROM {full} ORDER BY created_at DESC LIMIT {int(limit)}", env=env)
    return [r.asDict() for r in frame.collect()]


def now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- open keys
# Callers resolve many keys per run (every passing table, every successful job); reading the table
# for each would cost a Spark query each. `open_keys` answers "which keys may be open" with one
# query, and locally (one lakehouse per LAKEHOUSE_HOME, every writer goes through here) with no
# query at all: a marker file per open key under LAKEHOUSE_HOME/alerts/open/<env>/.


def _markers(env: str) -> Path | None:
    from retail_lakehouse.alerts.config import alerts_home
    from retail_lakehouse.core.config import load_settings

    try:
        local = load_settings(env).is_local
    except Exception:  # noqa: BLE001 - no markers: the caller queries the table
        return None
    return alerts_home() / "open" / env if local else None


def mark(key: str, env: str, *, is_open: bool) -> None:
    """Record locally that `key` has an open alert (or none any more); elsewhere a no-op."""
    directory = _markers(env)
    if directory is None:
        return
    path = directory / quote(key, safe="")
    if is_open:
        directory.mkdir(parents=True, exist_ok=True)
        path.touch()
    else:
        path.unlink(missing_ok=True)


def open_keys(env: str, prefix: str = "") -> set[str]:
    """Keys (starting with `prefix`) that have an unresolved alert.

    Locally from the marker files (no query); elsewhere, or when the markers were never written
    (a lakehouse from before them), one query of the table, which also writes the markers.

    Raises:
        LakehouseError: the table could not be read.
    """
    directory = _markers(env)
    if directory is not None and directory.is_dir():
        return {k for k in (unquote(p.name) for p in directory.iterdir()) if k.startswith(prefix)}
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes

    full = writes.ensure_table(TABLE, env=env)
    rows = engine.sql(f"SELECT DISTINCT alert_key FROM {full} WHERE resolved_at IS NULL", env=env).collect()
    keys = {r[0] for r in rows}
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for key in keys:
            mark(key, env, is_open=True)
    return {k for k in keys if k.startswith(prefix)}


def open_incidents_many(keys: list[str], env: str) -> dict[str, list[tuple[OpenIncident, dict[str, Any]]]]:
    """`open_incidents` of several keys in one query: key -> its unresolved rows, newest first."""
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes

    if not keys:
        return {}
    params = {f"k{i}": k for i, k in enumerate(keys)}
    with _IO_LOCK:
        full = writes.ensure_table(TABLE, env=env)
        rows = engine.sql(
            f"SELECT * FROM {full} WHERE resolved_at IS NULL AND alert_key IN "
            f"({', '.join(':' + p for p in params)}) ORDER BY created_at DESC",
            params,
            env=env,
        ).collect()
    out: dict[str, list[tuple[OpenIncident, dict[str, Any]]]] = {}
    for r in rows:
        d = r.asDict()
        incident = OpenIncident(
            alert_id=d["alert_id"],
            created_at=_utc(d["created_at"]),
            suppressed_count=int(d["suppressed_count"] or 0),
            destinations=tuple(json.loads(d["destinations"] or "[]")),
        )
        out.setdefault(d["alert_key"], []).append((incident, d))
    return out
