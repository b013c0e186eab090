"""Table-level checks declared in the table registry, not in the rule sets: the table exists, has rows,
meets its freshness SLA, has a normal day's volume, and kept its schema.

`declared_checks` turns each silver / gold table's declarations (``expect_rows``, ``sla``, ``volume`` in
``core/schema_definitions.yaml``) into `CheckSpec` s that run before the table's rule set; every one of
those tables also gets ``schema_drift``. `missing_table_result` is the ERROR row of a table that does
not exist (its checks cannot say anything about it). `sample_keys` adds the keys of a few offending rows
to a failed row-level check's evidence.

Freshness (``sla``) is judged in business time, as the rule sets' ``freshness`` kind: the table's newest
business time against its upstream's newest (or the run's ``business_date``), never the wall clock, so
generated history is not stale and a table whose build did not run falls behind its upstream.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retail_lakehouse.engine import spark_functions
from retail_lakehouse.pipeline.quality_model import (
    CheckContext,
    CheckOutcome,
    CheckResult,
    CheckSpec,
    register,
    split_reference,
)

if TYPE_CHECKING:
    from retail_lakehouse.core.config import Settings
    from retail_lakehouse.core.tables import TableDef

__all__ = ["BUILT_BY", "declared_checks", "missing_table_result", "sample_keys"]

# The job that creates a layer's tables (databricks.yml): ingestion notebooks write bronze,
# transformation notebooks (bronze_to_silver, silver_to_gold) write silver and gold.
BUILT_BY = {"bronze": "retail_ingestion", "silver": "retail_transformation", "gold": "retail_transformation"}
CHECKED_LAYERS = ("silver", "gold")


def declared_checks(settings: Settings | None = None) -> dict[str, list[CheckSpec]]:
    """The registry's declarations of every silver / gold table as checks (quarantine tables left out)."""
    from retail_lakehouse.core.tables import registry

    out: dict[str, list[CheckSpec]] = {}
    for t in registry():
        if t.layer not in CHECKED_LAYERS or t.name.endswith("_quarantine"):
            continue
        specs = out.setdefault(t.ref, [])
        if t.expect_rows:
            specs.append(CheckSpec(t.ref, "has_rows", "row_count", {"min_rows": 1}, "error"))
        if t.sla is not None:
            args = {"hours": t.sla.hours, "time": t.sla.time, "upstream": t.sla.upstream,
                    "upstream_time": t.sla.upstream_time}
            specs.append(CheckSpec(t.ref, "sla_freshness", "sla_freshness", args, "error"))
        if t.volume is not None:
            v = t.volume
            args = {"date": v.date, "warn": list(v.warn), "fail": list(v.fail), "days": v.days,
                    "min_history": v.min_history}
            specs.append(CheckSpec(t.ref, "volume", "volume", args, "error"))
        specs.append(CheckSpec(t.ref, "schema_drift", "schema_drift", {}, "error"))
    return out


def missing_table_result(tdef: TableDef, full: str) -> CheckResult:
    """The ERROR row of a table that does not exist: which table, and which job creates it."""
    job = BUILT_BY.get(tdef.layer, "the job that writes it")
    details = (
        f"table {full} does not exist, so none of its checks can run. It is created by job {job} "
        f"(it builds the {tdef.layer} layer); that job has not run (or failed) in this environment: "
        f"run it (`lakehouse run {job}`, or retail_daily), then the checks again."
    )
    return CheckResult(
        table_name=full,
        check_name="table_exists",
        check_type="table_exists",
        criticality="error",
        check_status="ERROR",
        metric_value=None,
        threshold=None,
        details=details,
        evidence=_json({"table": full, "layer": tdef.layer, "created_by_job": job, "exists": False}),
    )


def _json(value: Mapping[str, Any]) -> str:
    import json

    return json.dumps(value, default=str, sort_keys=True)


# ----------------------------------------------------------------------------- check kinds


@register("row_count", required=("min_rows",))
def check_row_count(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """The table has at least ``min_rows`` rows (``expect_rows`` in the registry)."""
    rows, least = ctx.df.count(), int(arguments["min_rows"])
    evidence = {"rows": rows, "min_rows": least}
    if rows >= least:
        return CheckOutcome(True, float(rows), float(least), f"{rows} rows", evidence=evidence)
    return CheckOutcome(
        False,
        float(rows),
        float(least),
        f"{rows} rows: {ctx.table} is expected to have rows (expect_rows in schema_definitions.yaml); "
        f"the last load wrote none: check the job that builds it ({BUILT_BY.get(ctx.table.split('.')[0])}) "
        "and its source",
        evidence=evidence,
    )


def _newest(df: Any, expression: str) -> dt.datetime | None:
    F = spark_functions()
    value = df.agg(
        F.date_format(F.max(F.expr(f"CAST(({expression}) AS timestamp)")), "yyyy-MM-dd HH:mm:ss.SSSSSS")
    ).collect()[0][0]
    return dt.datetime.fromisoformat(value) if value else None


@register("sla_freshness", required=("hours", "time", "upstream", "upstream_time"))
def check_sla_freshness(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """The newest business time lags the upstream's newest (or the run's business date) by at most ``hours``."""
    hours, upstream = float(arguments["hours"]), str(arguments["upstream"])
    newest = _newest(ctx.df, arguments["time"])
    if ctx.business_date is not None:
        as_of, basis = ctx.business_date, "business_date"
    else:
        as_of, basis = _newest(ctx.read(upstream), arguments["upstream_time"]), f"newest {upstream}"
    evidence: dict[str, Any] = {"newest": newest, "as_of": as_of, "basis": basis, "sla_hours": hours}
    if as_of is None:
        return CheckOutcome(False, None, hours, f"{upstream} has no rows: no business time to judge the SLA "
                            "against (see that table's checks)", status="ERROR", evidence=evidence)
    if newest is None:
        return CheckOutcome(False, None, hours, f"no rows: {ctx.table} has no business time ({arguments['time']}); "
                            f"{basis} is {as_of}", evidence=evidence)
    lag = max((as_of - newest).total_seconds() / 3600, 0.0)
    late = lag - hours
    evidence.update(lag_hours=round(lag, 3), late_hours=round(max(late, 0.0), 3))
    verdict = f"{late:.1f} h late" if late > 0 else "within SLA"
    return CheckOutcome(
        late <= 0,
        round(lag, 3),
        hours,
        f"newest {arguments['time']} {newest} is {lag:.1f} h behind {as_of} ({basis}); SLA {hours:g} h: {verdict}",
        evidence=evidence,
    )


@register("volume", required=("date",), optional=("warn", "fail", "days", "min_history"))
def check_volume(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """The day's rows against the median of the trailing days: WARN / FAIL outside the declared ratios.

    The day is the run's business date, else the newest business date in the table. Trailing days are
    the ``days`` before it that have rows (a lakehouse younger than that compares with what it has).
    """
    F = spark_functions()
    warn_low, warn_high = (float(x) for x in arguments.get("warn", (0.5, 2.0)))
    fail_low, fail_high = (float(x) for x in arguments.get("fail", (0.2, 5.0)))
    days, min_history = int(arguments.get("days", 7)), int(arguments.get("min_history", 2))
    counts = {
        r[0]: int(r[1])
        for r in ctx.df.groupBy(F.expr(f"CAST(({arguments['date']}) AS date)").alias("d")).count().collect()
        if r[0] is not None
    }
    if ctx.business_date is not None:
        day = (ctx.business_date - dt.timedelta(microseconds=1)).date()
    elif counts:
        day = max(counts)
    else:
        return CheckOutcome(True, None, None, "no rows: no day to judge (has_rows judges an empty table)",
                            evidence={"rows_by_day": {}})
    trailing = {d: n for d, n in counts.items() if day - dt.timedelta(days=days) <= d < day}
    rows = counts.get(day, 0)
    evidence: dict[str, Any] = {
        "day": day, "rows": rows, "trailing_rows_by_day": {str(d): n for d, n in sorted(trailing.items())},
        "warn_ratio": [warn_low, warn_high], "fail_ratio": [fail_low, fail_high],
    }
    if len(trailing) < min_history:
        return CheckOutcome(True, float(rows), None, f"{day}: {rows} rows; only {len(trailing)} trailing day(s) "
                            f"with rows (at least {min_history} needed): nothing to compare with", evidence=evidence)
    median = statistics.median(trailing.values())
    spread = statistics.median(abs(n - median) for n in trailing.values())  # median absolute deviation
    ratio = rows / median if median else float("inf")
    evidence.update(median=median, mad=spread, ratio=round(ratio, 4))
    if not fail_low <= ratio <= fail_high:
        status, word = "FAILED", "fail"
    elif not warn_low <= ratio <= warn_high:
        status, word = "WARN", "warn"
    else:
        status, word = "PASSED", "within bounds"
    bounds = f"warn outside [{warn_low:g}, {warn_high:g}], fail outside [{fail_low:g}, {fail_high:g}]"
    details = (
        f"{day}: {rows} rows vs median {median:g} (spread {spread:g}) of {len(trailing)} trailing day(s): "
        f"ratio {ratio:.2f} ({word}; {bounds})"
    )
    if status == "FAILED":
        return CheckOutcome(False, round(ratio, 4), fail_low, details, status="FAILED", evidence=evidence)
    return CheckOutcome(True, round(ratio, 4), warn_low, details, status=status, evidence=evidence)


def _simple_type(spark_type: str) -> str:
    t = spark_type.strip().lower().replace(" ", "")
    return {"integer": "int", "long": "bigint", "timestamp_ltz": "timestamp"}.get(t, t)


def _previous_schemas(ctx: CheckContext) -> dict[str, dict[str, Any]]:
    """Per table, the schema recorded by its latest earlier ``schema_drift`` result (one query per run)."""
    import json

    F = spark_functions()
    key = ("schema_drift", "previous")
    if key not in ctx.memo:
        metrics = ctx.read("monitoring.quality_metrics")
        found: dict[str, dict[str, Any]] = {}
        if "evidence" in metrics.columns:
            rows = (
                metrics.filter((F.col("check_type") == "schema_drift") & F.col("evidence").isNotNull())
                .select("table_name", "run_id", "check_timestamp", "evidence")
                .collect()
            )
            for r in sorted(rows, key=lambda r: r["check_timestamp"]):
                try:
                    columns = json.loads(r["evidence"]).get("columns")
                except ValueError:
                    continue
                if isinstance(columns, dict):
                    found[r["table_name"]] = {"run_id": r["run_id"], "columns": columns}
        ctx.memo[key] = found
    return ctx.memo[key]


def _diff(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, Any]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "retyped": {c: [before[c], after[c]] for c in sorted(set(before) & set(after)) if before[c] != after[c]},
    }


def _describe(diff: Mapping[str, Any]) -> str:
    parts = []
    if diff["added"]:
        parts.append("added " + ", ".join(diff["added"]))
    if diff["removed"]:
        parts.append("removed " + ", ".join(diff["removed"]))
    if diff["retyped"]:
        parts.append("retyped " + ", ".join(f"{c} {a} -> {b}" for c, (a, b) in diff["retyped"].items()))
    return "; ".join(parts) or "no change"


@register("schema_drift")
def check_schema_drift(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:  # noqa: ARG001
    """Columns added / removed / retyped: against the registry (the contract) and since the last run.

    A removed or retyped registry column FAILS (readers break); a column the registry does not declare
    WARNS (schema evolution to record in schema_definitions.yaml). Changes since the previous quality
    run (its recorded schema) are reported in the details and the evidence.
    """
    from retail_lakehouse.core.tables import registry

    actual = {f.name: _simple_type(f.dataType.simpleString()) for f in ctx.df.schema.fields}
    contract = {c: _simple_type(t) for c, t in registry().get(ctx.table).columns.items()}
    vs_registry = _diff(contract, actual)
    previous = _previous_schemas(ctx).get(ctx.full_name(ctx.table))
    since = _diff(previous["columns"], actual) if previous else None
    evidence = {"columns": actual, "vs_registry": vs_registry, "since_last_run": since,
                "previous_run": previous["run_id"] if previous else None}
    last = f"since run {previous['run_id']}: {_describe(since)}" if since else "first recorded schema"
    details = f"vs registry: {_describe(vs_registry)}; {last}"
    broken = len(vs_registry["removed"]) + len(vs_registry["retyped"])
    if broken:
        return CheckOutcome(False, float(broken), 0.0, details, evidence=evidence)
    status = "WARN" if vs_registry["added"] else None
    return CheckOutcome(True, float(len(vs_registry["added"])), 0.0, details, status=status, evidence=evidence)


# ----------------------------------------------------------------------------- sample keys

SAMPLE = 5


def sample_keys(spec: CheckSpec, ctx: CheckContext, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Keys of up to `SAMPLE` rows that break a row-level check; [] for the other kinds.

    not_null, value_range and referential_integrity: the offending rows' `keys`; unique: the repeated
    values with their counts.
    """
    F = spark_functions()
    df = ctx.df.filter(spec.arguments["where"]) if spec.arguments.get("where") else ctx.df
    args = spec.arguments
    shown = [k for k in keys if k in df.columns] or df.columns[:3]
    if spec.check == "unique":
        cols = [args["columns"]] if isinstance(args["columns"], str) else list(args["columns"])
        repeated = df.groupBy(*cols).count().filter(F.col("count") > 1).limit(SAMPLE)
        return [r.asDict() for r in repeated.collect()]
    if spec.check == "referential_integrity":
        column, (parent_table, parent_column) = args["column"], split_reference(args["references"])
        candidates = df.filter(F.col(column).isNotNull())
        unknown = args.get("unknown_value")
        if unknown is not None and not args.get("unknown_is_violation", False):
            candidates = candidates.filter(F.col(column) != F.lit(unknown))
        parents = ctx.read(parent_table).select(F.col(parent_column).alias("__parent")).distinct()
        orphans = candidates.join(parents, F.col(column) == F.col("__parent"), "left_anti")
        return [r.asDict() for r in orphans.select(*dict.fromkeys([*shown, column])).limit(SAMPLE).collect()]
    if spec.check == "not_null":
        cols = [args["columns"]] if isinstance(args["columns"], str) else list(args["columns"])
        bad = F.lit(False)
        for c in cols:
            bad = bad | F.col(c).isNull()
    elif spec.check == "value_range":
        col = F.col(args["column"])
        bad = F.lit(False)
        if "min" in args:
            bad = bad | (col < F.lit(args["min"]))
        if "max" in args:
            bad = bad | (col > F.lit(args["max"]))
        bad = col.isNotNull() & bad
    else:
        return []
    return [r.asDict() for r in df.filter(bad).select(*shown).limit(SAMPLE).collect()]
