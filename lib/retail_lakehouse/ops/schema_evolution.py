"""Schema evolution: a source added a column; compare bronze with the registry, silver and its rules.

Bronze evolves on its own (ingestion writes with schema evolution), so a new source column shows up
there first: a bronze column the registry does not declare. For each one the plan says how far it
got: its type, non-null count, arrival day and fill rate; whether the silver table, the registry and
the silver rule set carry it; and how many bronze keys carry a value silver lacks. The evolution:
`ALTER TABLE <silver> ADD COLUMNS` where the silver table lacks the column, then a run of the
transformation job so silver carries the values (a backfill from the arrival day when silver rows
were already processed without them), then verify no value is missing. Registry and rule-set
changes are code changes: the plan names them, it never edits files. Every call goes through the
workspace, so the same code runs locally and in dev/qa/prod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from retail_lakehouse.core.errors import LakehouseError, ParameterError, SqlError
from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import _delta
from retail_lakehouse.ops._delta import TableRef
from retail_lakehouse.ops._outcome import Outcome
from retail_lakehouse.ops.safety import require_confirmation

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.core.tables import TableDef
    from retail_lakehouse.ops.audit import AuditRecord
    from retail_lakehouse.ops.summary import Summary
    from retail_lakehouse.pipeline.silver import RuleSet

INGESTION_COLUMNS = ("_ingested_at", "_source_system", "_run_id", "_source_file")
JOB = "retail_transformation"


@dataclass
class ColumnFinding:
    """One new source column and how far it got.

    Attributes:
        column: its name.
        type: its type in bronze (Spark SQL).
        in_silver_table: the silver table has the column.
        in_silver_registry: `schema_definitions.yaml` declares it in silver.
        in_rule_set: the silver rule set maps it (`columns` or `optional_columns`).
        bronze_rows: bronze rows.
        non_null: bronze rows with a value.
        arrival_day: first business day with a value (None: no value yet).
        fill_rate: share of bronze rows since the arrival day that carry a value.
        silver_non_null: silver rows with a value (None: silver lacks the column).
        pending: bronze keys with a value that have no silver row yet (quarantined keys excluded).
        stale: silver rows without the value although bronze has it (processed before it was carried).
    """

    column: str
    type: str
    in_silver_table: bool
    in_silver_registry: bool
    in_rule_set: bool
    bronze_rows: int = 0
    non_null: int = 0
    arrival_day: str | None = None
    fill_rate: float = 0.0
    silver_non_null: int | None = None
    pending: int = 0
    stale: int = 0

    @property
    def carried(self) -> bool:
        """Silver has the column and its rules fill it."""
        return self.in_silver_table and self.in_rule_set

    @property
    def missing_in_silver(self) -> int:
        return self.pending + self.stale


@dataclass
class EvolutionPlan:
    """What the evolution would do for one silver table."""

    table: str
    bronze: TableRef
    silver: TableRef
    columns: pd.DataFrame
    findings: list[ColumnFinding]
    daily: pd.DataFrame
    alter: list[str] = field(default_factory=list)
    reprocess: dict[str, Any] | None = None
    code_changes: list[str] = field(default_factory=list)

    @property
    def new_columns(self) -> list[str]:
        return [f.column for f in self.findings]

    def summary(self) -> pd.DataFrame:
        """One row per new column, for display."""
        return pd.DataFrame(
            [
                {
                    "column": f.column, "type": f.type, "arrival_day": f.arrival_day, "bronze_rows": f.bronze_rows,
                    "non_null": f.non_null, "fill_rate_since_arrival": round(f.fill_rate, 3),
                    "silver_table": f.in_silver_table, "silver_registry": f.in_silver_registry,
                    "rule_set": f.in_rule_set, "silver_non_null": f.silver_non_null,
                    "pending_in_silver": f.pending, "stale_in_silver": f.stale,
                }
                for f in self.findings
            ],
            columns=["column", "type", "arrival_day", "bronze_rows", "non_null", "fill_rate_since_arrival",
                     "silver_table", "silver_registry", "rule_set", "silver_non_null", "pending_in_silver",
                     "stale_in_silver"],
        )

    def diagnosis(self) -> str:
        """The finding in words."""
        if not self.findings:
            return f"no new source column: every column of {self.bronze.full} is in the registry"
        parts = []
        for f in self.findings:
            where = "silver carries it (table, rules)" if f.carried else (
                "the silver table has it but its rules do not fill it" if f.in_silver_table
                else "the silver table lacks it")
            arrival = f"arrived {f.arrival_day}, " if f.arrival_day else "no value yet, "
            parts.append(
                f"new source column {f.column} ({f.type}) in {self.bronze.full}: {arrival}{f.non_null} of "
                f"{f.bronze_rows} rows carry a value ({f.fill_rate:.0%} since arrival); {where}; "
                f"{f.missing_in_silver} value(s) missing in {self.silver.full}"
            )
        return "\n".join(parts)

    @property
    def actions(self) -> list[str]:
        """The data changes, in order (SQL, then the job run)."""
        out = list(self.alter)
        if self.reprocess is not None:
            params = ", ".join(f"{k}={v}" for k, v in self.reprocess.items())
            out.append(f"run job {JOB}" + (f" ({params})" if params else " (incremental)"))
        return out


@dataclass
class EvolutionOutcome(Outcome):
    """What the run did and whether it held (`raise_for_status()` raises when it did not)."""

    procedure: ClassVar[str] = "schema_evolution"
    dry_run: bool
    actions: list[str]
    held: bool
    message: str
    run_id: int | None = None
    findings: list[ColumnFinding] = field(default_factory=list)


def check_table(tdef: TableDef) -> TableDef:
    """The table must be a silver table with a rule set.

    Raises:
        ParameterError: names the tables that have one.
    """
    from retail_lakehouse.pipeline.silver import SILVER_TABLES

    if tdef.layer != "silver" or tdef.name not in SILVER_TABLES:
        raise ParameterError(
            "table", f"{tdef.ref} is not a silver table built by rules; use one of {', '.join(SILVER_TABLES)}"
        )
    return tdef


# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(table=Param("table", layer="silver", check=check_table))


def compare_columns(
    bronze: dict[str, str], bronze_registry: dict[str, str], silver: list[str], silver_registry: dict[str, str],
    rules: RuleSet,
) -> pd.DataFrame:
    """Every column of bronze and silver with where it appears (pure: names in, frame out)."""
    mapped = {**rules.columns, **rules.optional_columns}
    names = list(dict.fromkeys([*bronze, *bronze_registry, *silver_registry, *silver]))
    return pd.DataFrame(
        [
            {"column": c, "bronze_type": bronze.get(c), "bronze_table": c in bronze, "bronze_registry": c in bronze_registry,
             "silver_table": c in silver, "silver_registry": c in silver_registry, "rule_set": c in mapped}
            for c in names
        ]
    )


def new_source_columns(bronze: dict[str, str], bronze_registry: dict[str, str]) -> dict[str, str]:
    """Bronze columns the registry does not declare (ingestion metadata excluded): what evolution added."""
    return {c: t for c, t in bronze.items() if c not in bronze_registry and c not in INGESTION_COLUMNS}


def alter_statements(silver: TableRef, findings: list[ColumnFinding]) -> list[str]:
    """`ALTER TABLE ... ADD COLUMNS` for the new columns the silver table lacks."""
    cols = [f"`{f.column}` {f.type}" for f in findings if not f.in_silver_table]
    return [f"ALTER TABLE {silver.full} ADD COLUMNS ({', '.join(cols)})"] if cols else []


def code_changes(table: str, bronze_ref: str, findings: list[ColumnFinding]) -> list[str]:
    """Registry and rule-set edits the new columns need (never made by the notebook)."""
    out = []
    for f in findings:
        out.append(f"declare `{f.column}: {f.type}` for {bronze_ref} in schema_definitions.yaml")
        if not f.in_silver_registry:
            out.append(f"declare `{f.column}: {f.type}` for silver.{table} in schema_definitions.yaml")
        if not f.in_rule_set:
            out.append(f"map `{f.column}` in rules/{table}.yaml (columns, and optional_columns for older bronze rows)")
    return out


def _types(w: WorkspaceClient, ref: TableRef, columns: list[str]) -> dict[str, str]:
    """Column types of a table (`typeof` of its first row; `string` when it is empty)."""
    if not columns:
        return {}
    select = ", ".join(f"typeof(`{c}`) AS `{c}`" for c in columns)
    frame = _delta.sql(w, f"SELECT {select} FROM {ref.full} LIMIT 1", env=ref.env)
    if frame.empty:
        return dict.fromkeys(columns, "string")
    return {c: str(frame[c].iloc[0]) for c in columns}


def _keys_match(keys: tuple[str, ...], left: str, right: str) -> str:
    return " AND ".join(f"{left}.`{k}` = {right}.`{k}`" for k in keys)


def _finding(
    w: WorkspaceClient, column: str, typ: str, *, bronze: TableRef, silver: TableRef, quarantine: TableRef,
    silver_cols: list[str], rules: RuleSet, day_expr: str,
) -> tuple[ColumnFinding, pd.DataFrame]:
    keys = silver.tdef.keys
    f = ColumnFinding(
        column, typ, in_silver_table=column in silver_cols, in_silver_registry=column in silver.tdef.columns,
        in_rule_set=column in {**rules.columns, **rules.optional_columns},
    )
    daily = _delta.sql(
        w, f"SELECT {day_expr} AS day, count(*) AS rows, count(`{column}`) AS non_null FROM {bronze.full} "
        "GROUP BY 1 ORDER BY 1", env=bronze.env,
    )
    f.bronze_rows, f.non_null = int(daily["rows"].sum()), int(daily["non_null"].sum())
    daily = daily[daily["day"].notna()].copy()  # rows without a business date count above only
    daily["day"] = [str(pd.Timestamp(d).date()) for d in daily["day"]]
    daily.insert(0, "column", column)
    arrived = daily[daily["non_null"] > 0]
    if not arrived.empty:
        f.arrival_day = str(arrived["day"].iloc[0])
        since = daily[daily["day"] >= f.arrival_day]
        f.fill_rate = float(since["non_null"].sum()) / max(1, int(since["rows"].sum()))
    if f.in_silver_table:
        f.silver_non_null = int(_delta.sql(w, f"SELECT count(`{column}`) AS n FROM {silver.full}", env=silver.env)["n"].iloc[0])
        q_filter = (f" AND NOT EXISTS (SELECT 1 FROM {quarantine.full} q WHERE {_keys_match(keys, 'q', 'b')})"
                    if _delta.exists(w, quarantine) else "")
        f.pending = int(_delta.sql(
            w, f"SELECT count(DISTINCT {', '.join(f'b.`{k}`' for k in keys)}) AS n FROM {bronze.full} b "
            f"WHERE b.`{column}` IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {silver.full} s WHERE "
            f"{_keys_match(keys, 's', 'b')}){q_filter}", env=bronze.env)["n"].iloc[0])
        f.stale = int(_delta.sql(
            w, f"SELECT count(*) AS n FROM {silver.full} s WHERE s.`{column}` IS NULL AND EXISTS (SELECT 1 FROM "
            f"{bronze.full} b WHERE {_keys_match(keys, 'b', 's')} AND b.`{column}` IS NOT NULL)", env=silver.env,
        )["n"].iloc[0])
    return f, daily


def plan(w: WorkspaceClient, tdef: TableDef, *, env: str) -> EvolutionPlan:
    """Compare bronze with the registry, the silver table and its rules, without changing anything.

    Raises:
        ParameterError: not a silver table with rules, or its bronze or silver table does not exist.
    """
    from retail_lakehouse.pipeline.silver import rule_set

    check_table(tdef)
    rules = rule_set(tdef.name)
    silver = TableRef.of(tdef, env)
    bronze = TableRef.of(registry().get(rules.source), env)
    quarantine = TableRef.of(registry().get(f"{tdef.name}_quarantine", layer="silver"), env)
    for ref in (bronze, silver):
        if not _delta.exists(w, ref):
            raise ParameterError("table", f"{ref.full} does not exist; a lost table is rebuilt with rebuild_from_source")
    bronze_cols = _delta.columns(w, bronze)
    silver_cols = _delta.columns(w, silver)
    bronze_types = _types(w, bronze, bronze_cols)
    columns = compare_columns(bronze_types, bronze.tdef.columns, silver_cols, tdef.columns, rules)
    day_expr = rules.columns[rules.date_column] if rules.date_column else "to_date(_ingested_at)"
    findings, daily = [], []
    for col, typ in new_source_columns(bronze_types, bronze.tdef.columns).items():
        f, d = _finding(w, col, typ, bronze=bronze, silver=silver, quarantine=quarantine, silver_cols=silver_cols,
                        rules=rules, day_expr=day_expr)
        findings.append(f)
        daily.append(d)
    p = EvolutionPlan(
        table=tdef.name, bronze=bronze, silver=silver, columns=columns, findings=findings,
        daily=pd.concat(daily, ignore_index=True) if daily else pd.DataFrame(columns=["column", "day", "rows", "non_null"]),
    )
    p.alter = alter_statements(silver, findings)
    p.code_changes = code_changes(tdef.name, bronze.tdef.ref, findings)
    if p.alter or any(f.carried and f.missing_in_silver for f in findings):
        p.reprocess = _reprocess_params(w, p, rules, day_expr)
    return p


def _reprocess_params(w: WorkspaceClient, p: EvolutionPlan, rules: RuleSet, day_expr: str) -> dict[str, Any]:
    """Incremental when only unprocessed rows lack the values; else a backfill from the arrival day."""
    needs_backfill = any(f.stale or not f.in_silver_table for f in p.findings)
    arrivals = [f.arrival_day for f in p.findings if f.arrival_day]
    if not needs_backfill or not rules.date_column or not arrivals:
        return {}
    last = _delta.sql(w, f"SELECT max({day_expr}) AS d FROM {p.bronze.full}", env=p.bronze.env)["d"].iloc[0]
    return {"backfill_start_date": min(arrivals), "backfill_end_date": str(pd.Timestamp(last).date())}


def apply(
    w: WorkspaceClient, p: EvolutionPlan, *, dry_run: bool, confirm: bool, record: AuditRecord | None = None
) -> EvolutionOutcome:
    """Add the columns silver lacks and run the transformation (unless dry run), then verify.

    Raises:
        ConfirmationRequired: qa/prod without confirm (nothing changed).
        LakehouseError: the workspace refused the ALTER TABLE (the message has the statement to run
            elsewhere) or the job run failed.
    """
    env = p.silver.env
    require_confirmation(env, dry_run=dry_run, confirm=confirm, action=f"schema evolution of {p.silver.full}")
    if dry_run:
        what = "; ".join(f"`{a}`" for a in p.actions) or "nothing (silver is up to date)"
        return EvolutionOutcome(True, p.actions, held=True, findings=p.findings,
                                message=f"dry run: would run {what}; nothing changed")
    if not p.actions:
        outcome = verify(w, p)
        outcome.message = "nothing to evolve: " + outcome.message
        return outcome
    before = _delta.version(w, p.silver)
    for statement in p.alter:
        try:
            _delta.sql(w, statement, env=env)
        except SqlError as exc:
            raise LakehouseError(
                f"the workspace refused `{statement}` ({str(exc).splitlines()[0][:200]}); nothing was changed. "
                "Run that statement where ALTER TABLE ADD COLUMNS is supported (Databricks SQL), then re-run "
                "this notebook to reprocess and verify."
            ) from None
    run_id = None
    if p.reprocess is not None:
        from retail_lakehouse.databricks.workspace import run_job

        run = run_job(w, JOB, p.reprocess, progress=False)
        run_id = run.run_id
        result = run.state.result_state.value if run.state and run.state.result_state else None
        if result != "SUCCESS":
            raise LakehouseError(f"run {run.run_id} of {JOB} ended {result}; see job_failure_triage")
    after = _delta.version(w, p.silver)
    if record is not None and after != before:
        record.changed(p.silver.full, before, after)
    outcome = verify(w, p)
    outcome.run_id = run_id
    return outcome


def verify(w: WorkspaceClient, p: EvolutionPlan) -> EvolutionOutcome:
    """Re-read the findings: every new column in the silver table and no value missing there."""
    fresh = plan(w, p.silver.tdef, env=p.silver.env)
    lacking = [f.column for f in fresh.findings if not f.in_silver_table]
    missing = {f.column: f.missing_in_silver for f in fresh.findings if f.missing_in_silver}
    held = not lacking and not missing
    if held:
        carried = ", ".join(f"{f.column} ({f.silver_non_null} values in silver)" for f in fresh.findings) or "none"
        msg = f"schema evolution held: {p.silver.full} carries every new source column: {carried}"
    else:
        msg = (f"schema evolution did not hold: {p.silver.full} lacks columns {lacking or 'none'}; "
               f"values missing in silver {missing or 'none'}")
    return EvolutionOutcome(False, p.actions, held=held, message=msg, findings=fresh.findings)


def summary_of(outcome: EvolutionOutcome, p: EvolutionPlan, params: Any) -> Summary:
    """The notebook's summary (its last cell): the new source columns and what the evolution did."""
    from retail_lakehouse.ops.summary import as_parameters, command, of_change

    env = p.silver.env
    new = p.new_columns
    return of_change(
        "schema_evolution", env=env, dry_run=outcome.dry_run, held=outcome.held,
        symptom=f"the source of {p.silver.full} changed its columns",
        diagnosis=p.diagnosis(),
        evidence=f"new in bronze: {', '.join(new) or 'none'}; actions: {'; '.join(outcome.actions or p.actions) or 'none'}"
                 + (f"; silver reprocessed by run {outcome.run_id}" if outcome.run_id else ""),
        message=outcome.message, parameters=as_parameters(params),
        after="# then make the code changes listed above (registry, rules) and check freshness:\n"
              + command("data_freshness", env=env),
    )
