"""The audit trail of ops notebooks: one row per run in `<env>_monitoring.ops_audit`.

Every ops notebook, diagnostic or not, dry or not, wraps its work in `audited(...)`; the row is
written through the workspace (the same SQL locally and on Databricks) when the block ends, with
the outcome and the tables it changed (versions before and after). Parameters whose names look
like secrets are redacted before they are recorded.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.tables import registry

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

_SECRET = re.compile(r"(token|secret|password|passwd|credential|api_?key)", re.IGNORECASE)


def redact(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters safe to record: values of secret-looking names replaced."""
    return {k: ("***" if _SECRET.search(k) else v) for k, v in parameters.items()}


@dataclass
class AuditRecord:
    """What an ops run did; filled in by the notebook's library calls."""

    audit_id: str
    notebook: str
    operation: str
    env: str
    actor: str
    started_at: dt.datetime
    parameters: dict[str, Any]
    dry_run: bool
    outcome: str = "RUNNING"
    tables_changed: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    ended_at: dt.datetime | None = None

    def changed(self, table: str, version_before: int | None, version_after: int | None) -> None:
        """Record that a table changed (Delta versions before and after)."""
        self.tables_changed.append({"table": table, "version_before": version_before, "version_after": version_after})


def _actor() -> str:
    for var in ("DATABRICKS_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def ensure_audit_table(w: WorkspaceClient, env: str | None = None) -> str:
    """Create the audit table if missing (DDL from the registry); return its full name."""
    from retail_lakehouse.databricks.statements import run_sql

    settings = load_settings(env)
    tdef = registry().get("ops_audit", layer="monitoring")
    full = tdef.full_name(settings)
    run_sql(w, f"CREATE TABLE IF NOT EXISTS {full} ({tdef.ddl()}) USING delta", env=settings.env)
    return full


def write_record(w: WorkspaceClient, record: AuditRecord) -> None:
    """Append one audit row through the workspace's SQL warehouse (values bound as parameters)."""
    from retail_lakehouse.databricks.statements import run_sql

    full = ensure_audit_table(w, record.env)
    params = {
        "audit_id": record.audit_id,
        "notebook": record.notebook,
        "operation": record.operation,
        "env": record.env,
        "actor": record.actor,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "parameters": json.dumps(redact(record.parameters), default=str, sort_keys=True),
        "dry_run": record.dry_run,
        "outcome": record.outcome,
        "tables_changed": json.dumps(record.tables_changed, default=str),
        "details": json.dumps(record.details, default=str)[:20000],
    }
    values = ", ".join(
        f"CAST(:{k} AS TIMESTAMP)" if k in ("started_at", "ended_at") else f":{k}" for k in params
    )
    run_sql(w, f"INSERT INTO {full} VALUES ({values})", params, env=record.env)


@contextmanager
def audited(
    w: WorkspaceClient,
    *,
    notebook: str,
    operation: str,
    parameters: Mapping[str, Any],
    env: str,
    dry_run: bool,
) -> Iterator[AuditRecord]:
    """Run a block as an audited ops run; the row is written whatever the outcome.

    The outcome is SUCCESS, DRY_RUN or FAILED: <error>; a failure is re-raised after recording.
    """
    record = AuditRecord(
        audit_id=str(uuid.uuid4()),
        notebook=notebook,
        operation=operation,
        env=env,
        actor=_actor(),
        started_at=dt.datetime.now(dt.UTC),
        parameters=dict(parameters),
        dry_run=dry_run,
    )
    try:
        yield record
        if record.outcome == "RUNNING":
            record.outcome = "DRY_RUN" if dry_run else "SUCCESS"
    except BaseException as exc:
        record.outcome = f"FAILED: {type(exc).__name__}: {str(exc)[:500]}"
        raise
    finally:
        record.ended_at = dt.datetime.now(dt.UTC)
        write_record(w, record)
