"""Backfill a date range: re-ingest bronze, reprocess silver and gold for the range and verify it, per day.

The jobs' own tasks are run with backfill parameters (`backfill_start_date`, `backfill_end_date`):
only the tasks that rebuild the table and what is built from it, read from the deployed jobs
(`jobs/get`) and submitted as one run (`jobs/runs/submit`), so the same code runs locally and on
Databricks. With layer bronze, the ingestion tasks of the range come first (`retail_ingestion`:
OLTP rows by `updated_at`, POS landing files by day, each replacing bronze's rows of the range),
then the transformation tasks. Rows per day are counted before and after, and the quality job is
run once the range is rebuilt.

Bronze is counted by the day its rows were ingested for (`updated_at` for OLTP tables, the event
date for POS); after a re-ingestion it holds what the source holds for those days, so a day may
have fewer rows than before (versions of a row the source has since updated), only an empty day
is a failure there. Silver and gold must not lose rows.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from retail_lakehouse.core.errors import LakehouseError, ParameterError, SqlError, TableNotFoundError
from retail_lakehouse.core.params import Param, Parameters, date_range
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import _delta
from retail_lakehouse.ops._delta import TableRef
from retail_lakehouse.ops._outcome import Outcome
from retail_lakehouse.ops.data_freshness import slas
from retail_lakehouse.ops.safety import require_confirmation

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.core.tables import TableDef
    from retail_lakehouse.ops.audit import AuditRecord
    from retail_lakehouse.ops.summary import Summary

LAYERS = ("bronze", "silver", "gold")
MAX_DAYS = 366
JOB = "retail_transformation"
INGESTION_JOB = "retail_ingestion"
QUALITY_JOB = "retail_data_quality_checks"
_ORDERS = ["clean_orders", "clean_order_items", "build_fact_sales", "build_agg_daily_sales"]
# Tasks of retail_transformation that rebuild a table with a business date, and what follows from it.
TASKS: dict[str, list[str]] = {
    "silver.orders": _ORDERS,
    "silver.order_items": _ORDERS,
    "silver.pos_transactions": ["clean_pos_transactions"],
    "gold.fact_sales": ["build_fact_sales", "build_agg_daily_sales"],
    "gold.agg_daily_sales": ["build_agg_daily_sales"],
}
_BRONZE_TO_SILVER = {"bronze.orders": "silver.orders", "bronze.order_items": "silver.order_items",
                     "bronze.pos_events": "silver.pos_transactions"}
# Tasks of retail_ingestion that re-ingest a silver table's sources (an order's lines come with it).
INGEST_TASKS: dict[str, list[str]] = {
    "silver.orders": ["ingest_orders", "ingest_order_items"],
    "silver.order_items": ["ingest_orders", "ingest_order_items"],
    "silver.pos_transactions": ["ingest_pos_events"],
}
_UPDATED_DAY = "to_date(try_to_timestamp(updated_at, 'yyyy-MM-dd HH:mm:ss'))"
# Bronze is counted by the day its rows were ingested for (what a bronze backfill replaces).
BRONZE_DAYS = {"bronze.orders": _UPDATED_DAY, "bronze.order_items": _UPDATED_DAY,
               "bronze.pos_events": "to_date(try_to_timestamp(event_ts))"}


def table_layer(name: str) -> str | None:
    """The layer to resolve a bare, ambiguous name in (`orders` means silver.orders)."""
    return "silver" if "." not in name and name in {"orders", "order_items"} else None


# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(
    table=Param("table", layer=table_layer),
    start_date="date",
    end_date="date",
    layers=Param("list", choices=LAYERS),
)


@dataclass
class BackfillPlan:
    """What a backfill would do."""

    tdef: TableDef
    start: dt.date
    end: dt.date
    layers: list[str]
    tasks: list[str]
    tables: list[str]
    env: str

    @property
    def jobs(self) -> list[str]:
        """The jobs whose tasks the plan runs (ingestion first)."""
        ingest = any(t.startswith("ingest_") for t in self.tasks)
        rest = any(not t.startswith("ingest_") for t in self.tasks)
        return [INGESTION_JOB] * ingest + [JOB] * rest

    @property
    def parameters(self) -> dict[str, str]:
        return {"backfill_start_date": self.start.isoformat(), "backfill_end_date": self.end.isoformat()}


@dataclass
class BackfillOutcome(Outcome):
    """What the backfill did and whether it held (`raise_for_status()` raises when it did not)."""

    procedure: ClassVar[str] = "backfill"
    dry_run: bool
    before: pd.DataFrame
    after: pd.DataFrame
    run_id: int | None = None
    quality: pd.DataFrame = field(default_factory=pd.DataFrame)
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)
    held: bool = True
    problems: list[str] = field(default_factory=list)
    message: str = ""


def make_plan(tdef: TableDef, start: dt.date, end: dt.date, layers: list[str], *, env: str) -> BackfillPlan:
    """Check the range and choose the tasks (pure: no workspace call).

    Raises:
        ParameterError: end before start, a range over MAX_DAYS, a table without a business date,
            no layer, or layers with nothing to rebuild for the table.
    """
    date_range(start, end)
    if (end - start).days + 1 > MAX_DAYS:
        raise ParameterError("end_date", f"the range has {(end - start).days + 1} days; backfill at most {MAX_DAYS}")
    if not layers:
        raise ParameterError("layers", f"name at least one of {', '.join(LAYERS)}")
    ref = _BRONZE_TO_SILVER.get(tdef.ref, tdef.ref)
    if ref not in TASKS:
        raise ParameterError(
            "table", f"{tdef.ref} has no business date to backfill by; use one of {', '.join(TASKS)} "
            "(dimensions are rebuilt whole by the next run)"
        )
    prefixes = tuple({"bronze": "ingest_", "silver": "clean_", "gold": "build_"}[layer] for layer in layers)
    tasks = [t for t in INGEST_TASKS.get(ref, []) + TASKS[ref] if t.startswith(prefixes)]
    if not tasks:
        raise ParameterError("layers", f"{tdef.ref} has nothing to rebuild in layers {layers}")
    layer_of = {"ingest": "bronze", "clean": "silver", "build": "gold"}
    tables = [f"{layer_of[t.split('_', 1)[0]]}.{t.split('_', 1)[1]}" for t in tasks]
    return BackfillPlan(tdef, start, end, list(layers), tasks, tables, env)


def _day_expr(ref: str) -> str:
    if ref in BRONZE_DAYS:
        return BRONZE_DAYS[ref]
    return next(s.business_date for s in slas() if s.table == ref and s.business_date)


def day_counts(w: WorkspaceClient, p: BackfillPlan) -> pd.DataFrame:
    """Rows per day of the range, per table (long form: table, day, rows); missing days have 0.

    One statement counts every table; only when it fails (a table not created yet) is each table's
    existence checked, and the ones that exist counted.
    """
    days = pd.date_range(p.start, p.end, freq="D").date
    refs = [(ref, TableRef.of(registry().get(ref), p.env)) for ref in p.tables]
    try:
        counts = _count_days(w, p, [(i, ref, tref) for i, (ref, tref) in enumerate(refs)])
    except (SqlError, TableNotFoundError):
        found = _delta.sql_each(w, [f"DESCRIBE DETAIL {tref.full}" for _, tref in refs], env=p.env)
        present = [(i, ref, tref) for i, ((ref, tref), d) in enumerate(zip(refs, found, strict=True))
                   if not isinstance(d, Exception)]
        counts = _count_days(w, p, present) if present else {}
    frames = [pd.DataFrame({"table": ref, "day": days, "rows": [counts.get(i, {}).get(d, 0) for d in days]})
              for i, (ref, _) in enumerate(refs)]
    return pd.concat(frames, ignore_index=True)


def _count_days(w: WorkspaceClient, p: BackfillPlan, tables: list[tuple[int, str, TableRef]]) -> dict[int, dict]:
    union = " UNION ALL ".join(
        f"SELECT {i} AS i, day, count(*) AS n FROM (SELECT {_day_expr(ref)} AS day FROM {tref.full}) "
        "WHERE day BETWEEN :start AND :end GROUP BY day"
        for i, ref, tref in tables
    )
    frame = _delta.sql(w, union, {"start": p.start, "end": p.end}, env=p.env)
    counts: dict[int, dict[dt.date, int]] = {}
    for i, d, n in zip(frame["i"], frame["day"], frame["n"], strict=True):
        counts.setdefault(int(i), {})[pd.Timestamp(d).date()] = int(n)
    return counts


def submit_tasks(w: WorkspaceClient, p: BackfillPlan, *, timeout: float = 3600) -> int:
    """Run the plan's tasks of the ingestion and transformation jobs, with backfill parameters, as one run.

    Ingestion tasks come first: every transformation task of the run waits for them.

    Raises:
        LakehouseError: the run did not succeed (the message names the failed tasks).
    """
    from databricks.sdk.service.jobs import SubmitTask, TaskDependency

    chosen = set(p.tasks)
    ingest = [t for t in p.tasks if t.startswith("ingest_")]
    tasks: list[SubmitTask] = []
    for job in p.jobs:
        for task in _job_tasks(w, job, chosen, p.parameters):
            if job == JOB and ingest:
                task.depends_on = (task.depends_on or []) + [TaskDependency(task_key=k) for k in ingest]
            tasks.append(task)
    run_name = f"backfill {p.tdef.ref} {p.start}..{p.end}"
    waiter = w.jobs.submit(run_name=run_name, tasks=tasks)
    run_id = waiter.run_id if hasattr(waiter, "run_id") and waiter.run_id else waiter.response.run_id
    deadline = time.monotonic() + timeout
    while True:
        run = w.jobs.get_run(run_id)
        life = run.state.life_cycle_state.value if run.state and run.state.life_cycle_state else ""
        if life in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill run {run_id} did not finish in {timeout}s; it keeps running")
        time.sleep(1.0)
    result = run.state.result_state.value if run.state and run.state.result_state else life
    if result != "SUCCESS":
        failed = [t.task_key for t in run.tasks or [] if t.state and t.state.result_state
                  and t.state.result_state.value != "SUCCESS"]
        raise LakehouseError(f"backfill run {run_id} ended {result}; failed tasks {failed}: see get_run(w, {run_id})")
    return int(run_id)


def _job_tasks(w: WorkspaceClient, name: str, chosen: set[str], parameters: dict[str, str]) -> list[Any]:
    """The chosen notebook tasks of a deployed job as submit tasks, with the parameters added."""
    from databricks.sdk.service.jobs import NotebookTask, SubmitTask, TaskDependency

    from retail_lakehouse.databricks.workspace import job_id

    settings = w.jobs.get(job_id(w, name)).settings
    clusters = {c.job_cluster_key: c.new_cluster for c in (settings.job_clusters or [])} if settings else {}
    out = []
    for t in (settings.tasks or []) if settings else []:
        if t.task_key not in chosen or t.notebook_task is None:
            continue
        base = dict(t.notebook_task.base_parameters or {})
        base.update(parameters)
        deps = [TaskDependency(task_key=d.task_key) for d in (t.depends_on or []) if d.task_key in chosen]
        out.append(
            SubmitTask(
                task_key=t.task_key,
                notebook_task=NotebookTask(notebook_path=t.notebook_task.notebook_path, base_parameters=base),
                depends_on=deps or None,
                new_cluster=clusters.get(t.job_cluster_key) if t.job_cluster_key else None,
                max_retries=t.max_retries,
                min_retry_interval_millis=t.min_retry_interval_millis,
            )
        )
    return out


def run_quality(w: WorkspaceClient, env: str) -> pd.DataFrame:
    """Run the quality job and return the checks it wrote (status per table and check)."""
    from retail_lakehouse.databricks.workspace import run_job

    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    run_job(w, QUALITY_JOB, progress=False)
    tref = TableRef.of(registry().get("quality_metrics", layer="monitoring"), env)
    return _delta.sql(
        w,
        f"SELECT table_name, check_name, criticality, check_status, metric_value FROM {tref.full} "
        "WHERE check_timestamp >= :started ORDER BY table_name, check_name",
        {"started": started},
        env=env,
    )


def judge(p: BackfillPlan, before: pd.DataFrame, after: pd.DataFrame, quality: pd.DataFrame) -> list[str]:
    """Problems left after the backfill (pure): empty days, silver/gold days that lost rows, failed error checks."""
    problems = []
    merged = before.merge(after, on=["table", "day"], suffixes=("_before", "_after"))
    for _, row in merged.iterrows():
        if row["rows_after"] == 0:
            problems.append(f"{row['table']} has no rows for {row['day']}")
        elif row["rows_after"] < row["rows_before"] and not str(row["table"]).startswith("bronze."):
            # Bronze re-ingested holds what the source holds now (see the module's docstring).
            problems.append(f"{row['table']} lost rows on {row['day']}: {row['rows_before']} -> {row['rows_after']}")
    if not quality.empty:
        failed = quality[(quality["check_status"] == "FAILED") & (quality["criticality"] == "error")]
        problems += [f"quality check {r.table_name}.{r.check_name} FAILED" for r in failed.itertuples()]
    return problems


def run(
    w: WorkspaceClient,
    p: BackfillPlan,
    *,
    dry_run: bool,
    confirm: bool,
    check_quality: bool = True,
    record: AuditRecord | None = None,
) -> BackfillOutcome:
    """Count per day, rebuild the range (unless dry run), count again, run quality checks, verify.

    Raises:
        ConfirmationRequired: qa/prod without confirm (before any workspace call).
    """
    require_confirmation(p.env, dry_run=dry_run, confirm=confirm, action=f"backfill of {p.tdef.ref}")
    before = day_counts(w, p)
    if dry_run:
        return BackfillOutcome(True, before, before, message=(
            f"dry run: would run tasks {p.tasks} of {p.jobs} with {p.parameters}, rewriting {p.tables} for "
            f"{p.start}..{p.end}; nothing changed"))
    refs = {t: TableRef.of(registry().get(t), p.env) for t in p.tables}
    versions_before = {t: _delta.version(w, r) for t, r in refs.items() if _delta.exists(w, r)}
    run_id = submit_tasks(w, p)
    versions: dict[str, tuple[int, int]] = {}
    for t, r in refs.items():
        after_v = _delta.version(w, r)
        versions[t] = (versions_before.get(t, -1), after_v)
        if record is not None:
            record.changed(r.full, versions_before.get(t), after_v)
    after = day_counts(w, p)
    quality = run_quality(w, p.env) if check_quality else pd.DataFrame()
    problems = judge(p, before, after, quality)
    msg = (f"backfill held: {p.tables} rebuilt for {p.start}..{p.end} by run {run_id}, every day has rows"
           + (", quality checks passed" if check_quality else "")) if not problems else \
        "backfill did not hold: " + "; ".join(problems)
    return BackfillOutcome(False, before, after, run_id, quality, versions, not problems, problems, msg)


def summary(outcome: BackfillOutcome) -> dict[str, Any]:
    """A short dict for the audit record's details."""
    return {"run_id": outcome.run_id, "held": outcome.held, "problems": outcome.problems[:20]}


def summary_of(outcome: BackfillOutcome, p: BackfillPlan, params: Any) -> Summary:
    """The notebook's summary (its last cell): the days rebuilt, rows before and after, quality."""
    from retail_lakehouse.ops.summary import as_parameters, command, of_change

    rows = lambda f: int(f["rows"].sum()) if len(f) and "rows" in f else 0  # noqa: E731
    empty = sorted({str(d) for d in outcome.before.loc[outcome.before["rows"] == 0, "day"]}) if len(outcome.before) else []
    return of_change(
        "backfill", env=p.env, dry_run=outcome.dry_run, held=outcome.held,
        symptom=f"days missing or wrong in {', '.join(p.tables)} ({p.start}..{p.end})",
        diagnosis=f"Rebuild {', '.join(p.tables)} for {p.start}..{p.end} with tasks {', '.join(p.tasks)}"
                  + (f"; days with no rows before: {', '.join(empty)}" if empty else "") + ".",
        evidence=f"rows in the range {rows(outcome.before)} before, {rows(outcome.after)} after"
                 + (f"; run {outcome.run_id}" if outcome.run_id else "")
                 + (f"; problems: {'; '.join(outcome.problems[:3])}" if outcome.problems else ""),
        message=outcome.message, parameters=as_parameters(params),
        after="# check the dashboards' tables are fresh again:\n" + command("data_freshness", env=p.env),
    )
