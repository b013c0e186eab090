"""Rebuild a lost table from its sources (disaster recovery: the table is gone).

Plan: confirm the table is missing (no Delta table at its name), the registry's `CREATE TABLE` (schema,
partitioning, properties), the watermark rows of the pipeline step that builds it (silver: pipeline
`silver`, source `<table>`; gold: pipeline `gold.<table>`) and the upstream count the rebuilt table
must reach. Apply: create the table, delete those watermark rows so the step reprocesses its whole
input, run the transformation job (it rebuilds the table and, incrementally, the tables built from
it), then verify the row count against upstream. Every call goes through the workspace, so the same
code rebuilds in dev/qa/prod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from retail_lakehouse.core.errors import LakehouseError, ParameterError
from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.core.tables import full_name, registry
from retail_lakehouse.ops import _delta
from retail_lakehouse.ops._delta import TableRef
from retail_lakehouse.ops._outcome import Outcome
from retail_lakehouse.ops.safety import require_confirmation

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.core.tables import TableDef
    from retail_lakehouse.ops.audit import AuditRecord
    from retail_lakehouse.ops.summary import Summary

JOB = "retail_transformation"
INGEST_JOB = "retail_ingestion"  # re-ingests a lost bronze table from the source (the system of record)
WATERMARKS = "monitoring.watermarks"
# Gold tables whose row count follows from upstream tables: ref -> count query over {name} placeholders.
_GOLD_EXPECTED = {
    "gold.fact_sales": "SELECT count(*) AS n FROM {silver.order_items} i JOIN {silver.orders} o ON i.order_id = o.order_id",
    "gold.agg_daily_sales": "SELECT count(*) AS n FROM (SELECT DISTINCT date_key, store_sk FROM {gold.fact_sales})",
}


@dataclass
class RebuildPlan:
    """What a rebuild would do.

    Attributes:
        ref: the table.
        missing: True when the table is gone (nothing exists at its name).
        rows_now: its rows when it exists (None when missing).
        create: the registry's CREATE TABLE statement.
        watermark_filter: pipeline/source of the watermark rows to reset.
        watermarks: those rows now.
        expected_rows: the upstream count the rebuilt table must reach (None: no upstream rule).
        expected_sql: how that count is computed.
        downstream: tables built from this one (the job reprocesses them incrementally).
    """

    ref: TableRef
    missing: bool
    rows_now: int | None
    create: str
    watermark_filter: dict[str, str]
    watermarks: pd.DataFrame
    expected_rows: int | None
    expected_sql: str | None
    downstream: list[str] = field(default_factory=list)

    @property
    def reset(self) -> str:
        """The watermark reset statement (values bound as parameters)."""
        where = " AND ".join(f"{k} = :{k}" for k in self.watermark_filter)
        return f"DELETE FROM {full_name(WATERMARKS, self.ref.env)} WHERE {where}"

    @property
    def actions(self) -> list[str]:
        where = ", ".join(f"{k} {v!r}" for k, v in self.watermark_filter.items())
        return [self.create, f"{self.reset}  -- {where}", f"run job {job_for(self.ref.tdef)}"]

    def diagnosis(self) -> str:
        if not self.missing:
            return f"{self.ref.full} exists ({self.rows_now} rows): nothing is lost, nothing to rebuild"
        expected = f"; upstream says it should hold {self.expected_rows} rows" if self.expected_rows is not None else ""
        return f"{self.ref.full} is missing: no Delta table at its name (data and log gone){expected}"


@dataclass
class RebuildOutcome(Outcome):
    """What the rebuild did and whether it held (`raise_for_status()` raises when it did not)."""

    procedure: ClassVar[str] = "rebuild_from_source"
    dry_run: bool
    actions: list[str]
    rows_after: int | None
    expected_rows: int | None
    held: bool
    message: str
    run_id: int | None = None




def watermark_filter(tdef: TableDef) -> dict[str, str]:
    """The watermark rows of the step that builds the table.

    Raises:
        ParameterError: the table is not rebuilt by the transformation job (bronze, monitoring,
            quarantine); the message says what to do instead.
    """
    from retail_lakehouse.pipeline.ingest import OLTP_SYSTEM, OLTP_TABLES
    from retail_lakehouse.pipeline.silver import SILVER_TABLES

    if tdef.layer == "bronze" and tdef.name in OLTP_TABLES:
        return {"pipeline": "bronze", "source": f"{OLTP_SYSTEM}.{tdef.name}"}  # re-read from the store database
    if tdef.layer == "silver" and tdef.name in SILVER_TABLES:
        return {"pipeline": "silver", "source": tdef.name}
    if tdef.layer == "gold":
        return {"pipeline": f"gold.{tdef.name}"}
    raise ParameterError(
        "table", f"{tdef.ref} is not rebuilt by {JOB} or {INGEST_JOB}: rebuild_from_source takes the bronze tables "
        f"of the store database ({', '.join(OLTP_TABLES)}), silver tables ({', '.join(SILVER_TABLES)}) and gold "
        "tables; bronze.pos_events is re-read from the POS landing files (move its stream checkpoint aside, run "
        f"{INGEST_JOB}), quarantine tables are refilled by reprocessing their silver table"
    )


def job_for(tdef: TableDef) -> str:
    """The job that rebuilds the table: ingestion for bronze (from the source), else the transformation."""
    return INGEST_JOB if tdef.layer == "bronze" else JOB


def check_table(tdef: TableDef) -> TableDef:
    """The table must be one this procedure rebuilds (see `watermark_filter`).

    Raises:
        ParameterError: names the tables the transformation job builds.
    """
    watermark_filter(tdef)
    return tdef


# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(table=Param("table", check=check_table))


def create_statement(tdef: TableDef, full: str) -> str:
    """The registry's DDL as one `CREATE TABLE IF NOT EXISTS` (partitioning and properties included)."""
    parts = f" PARTITIONED BY ({', '.join(tdef.partition_by)})" if tdef.partition_by else ""
    props = ", ".join(f"'{k}' = '{v}'" for k, v in tdef.properties.items())
    props_sql = f" TBLPROPERTIES ({props})" if props else ""
    comment = f" COMMENT '{tdef.description.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'" \
        if tdef.description else ""
    return f"CREATE TABLE IF NOT EXISTS {full} ({tdef.ddl()}) USING delta{parts}{comment}{props_sql}"


def expected_sql(tdef: TableDef, env: str) -> str | None:
    """The upstream count the table must match: silver = bronze keys minus quarantined keys."""
    from retail_lakehouse.pipeline.silver import SILVER_TABLES, rule_set

    if tdef.layer == "silver" and tdef.name in SILVER_TABLES:
        bronze = full_name(rule_set(tdef.name).source, env)
        quarantine = full_name(f"silver.{tdef.name}_quarantine", env)
        keys = ", ".join(f"b.`{k}`" for k in tdef.keys)
        match = " AND ".join(f"q.`{k}` = b.`{k}`" for k in tdef.keys)
        return (f"SELECT count(DISTINCT {keys}) AS n FROM {bronze} b "
                f"WHERE NOT EXISTS (SELECT 1 FROM {quarantine} q WHERE {match})")
    template = _GOLD_EXPECTED.get(tdef.ref)
    if template is None:
        return None
    for ref in ("silver.order_items", "silver.orders", "gold.fact_sales"):
        template = template.replace("{" + ref + "}", full_name(ref, env))
    return template


def _count(w: WorkspaceClient, statement: str, env: str) -> int:
    return int(_delta.sql(w, statement, env=env)["n"].iloc[0])


def plan(w: WorkspaceClient, tdef: TableDef, *, env: str) -> RebuildPlan:
    """Check whether the table is lost and what rebuilding it involves, without changing anything.

    Raises:
        ParameterError: a table this procedure does not rebuild.
    """
    wm_filter = watermark_filter(tdef)
    ref = TableRef.of(tdef, env)
    missing = not _delta.exists(w, ref)
    rows_now = None if missing else _delta.count(w, ref)
    where = " AND ".join(f"{k} = :{k}" for k in wm_filter)
    wm_full = full_name(WATERMARKS, env)
    wm_ref = TableRef.of(registry().get(WATERMARKS), env)
    watermarks = (_delta.sql(w, f"SELECT * FROM {wm_full} WHERE {where} ORDER BY source", wm_filter, env=env)
                  if _delta.exists(w, wm_ref) else pd.DataFrame())
    exp_sql = expected_sql(tdef, env)
    expected = None
    if exp_sql is not None:
        try:
            expected = _count(w, exp_sql, env)
        except LakehouseError:
            expected = None  # an upstream table is missing too: rebuild it first
    return RebuildPlan(ref, missing, rows_now, create_statement(tdef, ref.full), wm_filter, watermarks, expected,
                       exp_sql, _delta.downstream(tdef.ref))


def apply(
    w: WorkspaceClient, p: RebuildPlan, *, dry_run: bool, confirm: bool, record: AuditRecord | None = None
) -> RebuildOutcome:
    """Create the table, reset its watermarks, run the job (unless dry run or the table exists), verify.

    Raises:
        ConfirmationRequired: qa/prod without confirm (nothing changed).
        LakehouseError: the job run failed (the message names the run).
    """
    env = p.ref.env
    require_confirmation(env, dry_run=dry_run, confirm=confirm, action=f"rebuild of {p.ref.full}")
    if not p.missing:
        return RebuildOutcome(dry_run, [], p.rows_now, p.expected_rows, held=True,
                              message=f"{p.ref.full} exists ({p.rows_now} rows); nothing to rebuild, nothing changed")
    if dry_run:
        return RebuildOutcome(True, p.actions, None, p.expected_rows, held=True,
                              message="dry run: would run " + "; ".join(f"`{a}`" for a in p.actions) + "; nothing changed")
    from retail_lakehouse.databricks.workspace import run_job

    _delta.sql(w, p.create, env=env)
    wm_ref = TableRef.of(registry().get(WATERMARKS), env)
    wm_before = _delta.version(w, wm_ref) if _delta.exists(w, wm_ref) else None
    if wm_before is not None:
        _delta.sql(w, p.reset, p.watermark_filter, env=env)
        if record is not None:
            record.changed(wm_ref.full, wm_before, _delta.version(w, wm_ref))
    job = job_for(p.ref.tdef)
    run = run_job(w, job, progress=False)
    result = run.state.result_state.value if run.state and run.state.result_state else None
    if record is not None and _delta.exists(w, p.ref):
        record.changed(p.ref.full, None, _delta.version(w, p.ref))
    if result != "SUCCESS":
        raise LakehouseError(f"rebuild run {run.run_id} of {job} ended {result}; see job_failure_triage")
    outcome = verify(w, p)
    outcome.run_id = run.run_id
    return outcome


def verify(w: WorkspaceClient, p: RebuildPlan) -> RebuildOutcome:
    """The table exists again and holds the rows upstream says it should (re-counted now)."""
    env = p.ref.env
    if not _delta.exists(w, p.ref):
        return RebuildOutcome(False, p.actions, None, p.expected_rows, held=False,
                              message=f"rebuild did not hold: {p.ref.full} still does not exist")
    rows = _delta.count(w, p.ref)
    expected = _count(w, p.expected_sql, env) if p.expected_sql else None
    held = rows > 0 and (expected is None or rows == expected)
    check = f"equal to upstream's {expected}" if expected is not None else "no upstream count to compare with"
    msg = (f"rebuilt {p.ref.full}: {rows} rows, {check}" if held else
           f"rebuild did not hold: {p.ref.full} has {rows} rows, upstream says {expected}")
    return RebuildOutcome(False, p.actions, rows, expected, held=held, message=msg)


def summary_of(outcome: RebuildOutcome, p: RebuildPlan, params: Any) -> Summary:
    """The notebook's summary (its last cell): the lost table, the rebuild and its row check."""
    from retail_lakehouse.ops.summary import as_parameters, command, of_change

    env = p.ref.env
    return of_change(
        "rebuild_from_source", env=env, dry_run=outcome.dry_run, held=outcome.held,
        symptom=f"{p.ref.full} is " + ("gone" if p.missing else f"damaged ({p.rows_now} rows)"),
        diagnosis=p.diagnosis(),
        evidence=(f"rows after {outcome.rows_after} vs upstream {outcome.expected_rows} ({p.expected_sql})"
                  if p.expected_sql else f"rows after {outcome.rows_after}; no upstream count in the lakehouse "
                  "(the source is the system of record)")
                 + (f"; rebuilt by run {outcome.run_id} of {job_for(p.ref.tdef)}" if outcome.run_id else ""),
        message=outcome.message, parameters=as_parameters(params),
        after="# the tables built from it were reprocessed by the job; check freshness:\n"
              + command("data_freshness", env=env),
    )
