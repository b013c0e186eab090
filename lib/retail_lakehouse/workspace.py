"""Talk to a Databricks workspace through `databricks-sdk`: the real one, or the local workspace.

`connect(env)` returns a `WorkspaceClient`: for dev/qa/prod from the SDK's standard auth chain
(the environment's profile in `params/<env>.yaml`, or DATABRICKS_* variables); for `local` from the
local workspace (`lakehouse workspace start`, or one started in this process). The helpers below
work the same against both.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from retail_lakehouse.config import load_settings
from retail_lakehouse.errors import ConfigError, JobFailedError, JobNotFoundError, SqlError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import date, datetime

    import pandas as pd
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.jobs import Run

__all__ = ["billing_usage", "cluster_events", "connect", "get_run", "query_history", "run_job", "run_sql"]

_TERMINAL = {"TERMINATED", "SKIPPED", "INTERNAL_ERROR"}


def connect(env: str | None = None) -> WorkspaceClient:
    """A workspace client for the environment.

    Args:
        env: `local`, `dev`, `qa` or `prod` (default `LAKEHOUSE_ENV` or `local`).

    Returns:
        A `databricks.sdk.WorkspaceClient`. Locally it points at the running local workspace
        (`LAKEHOUSE_HOME/workspace/server.json`) or at one started in this process.
    """
    import os

    from databricks.sdk import WorkspaceClient

    settings = load_settings(env)
    if not settings.is_local:
        # The SDK's standard chain: what the environment says wins (DATABRICKS_HOST/TOKEN or a
        # DATABRICKS_CONFIG_PROFILE), else the profile named in params/<env>.yaml.
        profile = settings.databricks.get("profile")
        chosen = any(os.environ.get(v) for v in ("DATABRICKS_HOST", "DATABRICKS_CONFIG_PROFILE"))
        if profile and not chosen:
            return WorkspaceClient(profile=profile)
        return WorkspaceClient()
    from retail_lakehouse.local_workspace import cli

    host, token = cli.live_server() or (None, None)
    if host is None:
        from retail_lakehouse import local_workspace

        ws = local_workspace.current() or local_workspace.start()
        host, token = ws.host, ws.token
    return _local_client(host, token)


def _local_client(host: str, token: str | None) -> WorkspaceClient:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    # An explicit config: DATABRICKS_* variables or a profile of the user's must not leak in.
    config = Config(host=host, token=token, auth_type="pat", config_file="/dev/null", profile=None)
    return WorkspaceClient(config=config)


def warehouse_id(w: WorkspaceClient, env: str | None = None) -> str:
    """`databricks.warehouse_id` of the environment, else the first warehouse of the workspace.

    Raises:
        ConfigError: no warehouse is set and the workspace has none.
    """
    settings = load_settings(env)
    configured = settings.databricks.get("warehouse_id")
    if configured:
        return str(configured)
    for wh in w.warehouses.list():
        if wh.id:
            return wh.id
    raise ConfigError(f"no SQL warehouse: set databricks.warehouse_id in params/{settings.env}.yaml")


# ----------------------------------------------------------------------------- SQL


def run_sql(
    w: WorkspaceClient,
    statement: str,
    params: Mapping[str, Any] | None = None,
    *,
    warehouse_id: str | None = None,
    env: str | None = None,
    timeout: float = 600,
) -> pd.DataFrame:
    """Run a statement on a SQL warehouse and return the whole result, typed from its manifest.

    Args:
        w: workspace client.
        statement: Databricks SQL with named parameters `:name`.
        params: parameter values (int, float, bool, Decimal, date, datetime, str, None).
        warehouse_id: warehouse (default: see `warehouse_id()`).
        env: environment whose settings name the warehouse.
        timeout: seconds to wait for the statement.

    Raises:
        SqlError: the statement failed or was canceled; the message has the warehouse's error.
    """
    from databricks.sdk.service.sql import StatementParameterListItem

    wid = warehouse_id or globals()["warehouse_id"](w, env)
    items = [StatementParameterListItem(name=k, value=_param_value(v), type=_param_type(v)) for k, v in (params or {}).items()]
    response = w.statement_execution.execute_statement(
        statement, wid, parameters=items or None, wait_timeout="30s", on_wait_timeout=_continue()
    )
    deadline = time.monotonic() + timeout
    delay = 0.05
    while response.status and response.status.state and response.status.state.value in ("PENDING", "RUNNING"):
        if time.monotonic() > deadline:
            w.statement_execution.cancel_execution(response.statement_id)
            raise SqlError(f"statement timed out after {timeout}s and was canceled: {statement[:200]}")
        time.sleep(delay)
        delay = min(1.0, delay * 2)
        response = w.statement_execution.get_statement(response.statement_id)
    state = response.status.state.value if response.status and response.status.state else "UNKNOWN"
    if state != "SUCCEEDED":
        err = response.status.error if response.status else None
        detail = f"{err.error_code.value if err and err.error_code else ''}: {err.message if err else ''}"
        raise SqlError(f"statement {state}: {detail}\n  in statement: {statement[:400]}")
    manifest = response.manifest
    columns = manifest.schema.columns or [] if manifest and manifest.schema else []
    rows: list[list[Any]] = list(response.result.data_array or []) if response.result else []
    next_index = response.result.next_chunk_index if response.result else None
    while next_index is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(response.statement_id, next_index)
        rows.extend(chunk.data_array or [])
        next_index = chunk.next_chunk_index
    return _frame(columns, rows)


def _continue() -> Any:
    from databricks.sdk.service.sql import ExecuteStatementRequestOnWaitTimeout

    return ExecuteStatementRequestOnWaitTimeout.CONTINUE


def _param_type(value: Any) -> str:
    import datetime as dt

    if value is None:
        return "STRING"
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, Decimal):
        return "DECIMAL(38,18)"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"


def _param_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _integers(series: pd.Series) -> pd.api.extensions.ExtensionArray:
    """Integer strings -> nullable Int64, parsed in C (numpy's str -> int64 cast): exact for 64-bit values."""
    import numpy as np
    import pandas as pd

    values = series.to_numpy(dtype=object)
    mask = pd.isna(values)
    if mask.any():
        values = values.copy()
        values[mask] = "0"
    parsed = values.astype(str).astype(np.int64) if len(values) else np.array([], dtype=np.int64)
    return pd.arrays.IntegerArray(parsed, mask.astype(bool))


def _frame(columns: list[Any], rows: list[list[Any]]) -> pd.DataFrame:
    """JSON_ARRAY rows -> pandas, each column typed from its Databricks type name."""
    import pandas as pd

    names = [c.name for c in columns]
    raw = pd.DataFrame(rows, columns=names, dtype=object) if rows else pd.DataFrame({n: [] for n in names}, dtype=object)
    out = {}
    for i, col in enumerate(columns):
        series = raw.iloc[:, i]
        kind = col.type_name.value if col.type_name else "STRING"
        if kind in ("LONG", "INT", "SHORT", "BYTE"):
            out[col.name] = _integers(series)
        elif kind in ("DOUBLE", "FLOAT"):
            out[col.name] = pd.to_numeric(series, errors="coerce").astype("float64")
        elif kind == "DECIMAL":
            out[col.name] = pd.Series([None if v is None else Decimal(v) for v in series], dtype=object)
        elif kind == "BOOLEAN":
            out[col.name] = pd.array([None if v is None else v == "true" for v in series], dtype="boolean")
        elif kind == "DATE":
            out[col.name] = pd.to_datetime(series, errors="coerce")
        elif kind == "TIMESTAMP":
            out[col.name] = pd.to_datetime(series, errors="coerce", utc=True)
        elif kind in ("ARRAY", "MAP", "STRUCT"):
            out[col.name] = pd.Series([None if v is None else json.loads(v) for v in series], dtype=object)
        else:
            out[col.name] = series.astype(object)
    return pd.DataFrame(out, columns=names)


# ----------------------------------------------------------------------------- jobs


def job_id(w: WorkspaceClient, name: str) -> int:
    """The id of the job named `name` (its `name` setting).

    Raises:
        JobNotFoundError: no such job; the message lists the jobs.
    """
    found = [j for j in w.jobs.list(name=name) if j.job_id is not None]
    if found:
        return int(found[0].job_id)  # type: ignore[arg-type]
    known = sorted(str(j.settings.name) for j in w.jobs.list() if j.settings)
    raise JobNotFoundError(f"no job named {name!r} in the workspace; jobs: {', '.join(known) or '(none)'}")


def run_job(
    w: WorkspaceClient,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float = 3600,
    progress: bool = True,
    poll_seconds: float = 1.0,
    raise_on_failure: bool = False,
) -> Run:
    """Run a job by name and wait for it, with a progress bar over its tasks.

    Args:
        w: workspace client.
        name: the job's name (or, locally, its bundle key).
        params: job parameters.
        timeout: seconds to wait.
        progress: show a tqdm bar of finished tasks.
        poll_seconds: wait between polls.
        raise_on_failure: raise JobFailedError when the run does not succeed.

    Returns:
        The finished run (`w.jobs.get_run`).

    Raises:
        JobNotFoundError: no job of that name.
        TimeoutError: the run did not finish in time (it keeps running).
    """
    from retail_lakehouse.bundle import param_str

    jid = job_id(w, name)
    waiter = w.jobs.run_now(jid, job_parameters={k: param_str(v) for k, v in (params or {}).items()} or None)
    run_id = waiter.run_id if hasattr(waiter, "run_id") else waiter.response.run_id
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=name, unit="task")
    deadline = time.monotonic() + timeout
    try:
        while True:
            run = w.jobs.get_run(run_id)
            tasks = run.tasks or []
            done = sum(1 for t in tasks if t.state and t.state.life_cycle_state and t.state.life_cycle_state.value in _TERMINAL)
            if bar is not None:
                bar.total = len(tasks)
                bar.n = done
                bar.set_postfix_str(run.state.life_cycle_state.value if run.state and run.state.life_cycle_state else "")
                bar.refresh()
            if run.state and run.state.life_cycle_state and run.state.life_cycle_state.value in _TERMINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {name!r} run {run_id} did not finish in {timeout}s; it keeps running")
            time.sleep(poll_seconds)
    finally:
        if bar is not None:
            bar.close()
    result = run.state.result_state.value if run.state and run.state.result_state else None
    if raise_on_failure and result != "SUCCESS":
        failed = [t.task_key for t in run.tasks or [] if t.state and t.state.result_state and t.state.result_state.value == "FAILED"]
        raise JobFailedError(
            f"job {name!r} run {run_id} ended {result}: failed tasks {failed}; see get_run(w, {run_id})",
            run_id=str(run_id),
            failed_tasks=failed,
        )
    return run


def get_run(w: WorkspaceClient, run_id: int) -> dict[str, Any]:
    """A run and, per task, its state, error and error trace (from runs/get-output)."""
    run = w.jobs.get_run(run_id)
    out = run.as_dict()
    tasks = []
    for t in run.tasks or []:
        item = t.as_dict()
        if t.run_id is not None and t.state and t.state.life_cycle_state and t.state.life_cycle_state.value in _TERMINAL:
            try:
                output = w.jobs.get_run_output(t.run_id)
                item["error"], item["error_trace"] = output.error, output.error_trace
                item["notebook_output"] = output.notebook_output.as_dict() if output.notebook_output else None
            except Exception as exc:  # noqa: BLE001 - an output that cannot be read does not hide the run
                item["error"] = item.get("error") or f"output unavailable: {exc}"
        tasks.append(item)
    out["tasks"] = tasks
    return out


# ----------------------------------------------------------------------------- clusters, history, cost


def cluster_events(w: WorkspaceClient, cluster_id: str, *, limit: int = 500) -> pd.DataFrame:
    """A cluster's events, oldest first: timestamp, type, details."""
    import pandas as pd
    from databricks.sdk.service.compute import GetEventsOrder

    rows = []
    for e in w.clusters.events(cluster_id, order=GetEventsOrder.ASC, limit=min(limit, 500)):
        rows.append(
            {
                "timestamp": pd.to_datetime(e.timestamp, unit="ms", utc=True),
                "type": e.type.value if e.type else None,
                "details": e.details.as_dict() if e.details else {},
            }
        )
    return pd.DataFrame(rows, columns=["timestamp", "type", "details"])


def query_history(
    w: WorkspaceClient,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    statuses: list[str] | None = None,
    max_results: int = 100,
) -> pd.DataFrame:
    """Statements served by the SQL warehouses, most recent first."""
    import pandas as pd
    from databricks.sdk.service.sql import QueryFilter, QueryStatus, TimeRange

    filt = QueryFilter()
    if start or end:
        filt.query_start_time_range = TimeRange(
            start_time_ms=int(start.timestamp() * 1000) if start else None,
            end_time_ms=int(end.timestamp() * 1000) if end else None,
        )
    if statuses:
        filt.statuses = [QueryStatus(s) for s in statuses]
    rows, token = [], None
    while len(rows) < max_results:
        page = w.query_history.list(filter_by=filt, max_results=min(100, max_results - len(rows)), page_token=token)
        for q in page.res or []:
            rows.append(
                {
                    "query_id": q.query_id,
                    "query_text": q.query_text,
                    "status": q.status.value if q.status else None,
                    "user_name": q.user_name,
                    "duration_ms": q.duration,
                    "rows_produced": q.rows_produced,
                    "start_time": pd.to_datetime(q.query_start_time_ms, unit="ms", utc=True),
                    "end_time": pd.to_datetime(q.query_end_time_ms, unit="ms", utc=True) if q.query_end_time_ms else pd.NaT,
                    "error_message": q.error_message,
                }
            )
        token = page.next_page_token
        if not page.has_next_page or not token:
            break
    return pd.DataFrame(rows)


COST_SQL = """
SELECT
  u.usage_date,
  u.usage_metadata.job_id AS job_id,
  u.usage_metadata.job_run_id AS job_run_id,
  u.usage_metadata.cluster_id AS cluster_id,
  u.sku_name,
  u.cloud,
  u.usage_start_time,
  u.usage_end_time,
  u.usage_quantity AS dbus,
  p.pricing.default AS list_price,
  u.usage_quantity * p.pricing.default AS list_cost,
  p.currency_code
FROM system.billing.usage u
JOIN system.billing.list_prices p
  ON u.sku_name = p.sku_name
 AND u.cloud = p.cloud
 AND u.usage_unit = p.usage_unit
 AND u.usage_end_time >= p.price_start_time
 AND (p.price_end_time IS NULL OR u.usage_end_time < p.price_end_time)
WHERE u.usage_date BETWEEN :start_date AND :end_date
ORDER BY u.usage_start_time
"""


def billing_usage(
    w: WorkspaceClient, start: date, end: date, *, warehouse_id: str | None = None, env: str | None = None
) -> pd.DataFrame:
    """DBUs and list cost per usage record between two dates (inclusive), from the system tables."""
    return run_sql(w, COST_SQL, {"start_date": start, "end_date": end}, warehouse_id=warehouse_id, env=env)
