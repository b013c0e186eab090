"""The built-in check kinds of `retail_lakehouse.pipeline.quality`: not_null, unique, referential_integrity,
value_range, freshness, row_count_reconciliation and quarantine_rate.

Each is an `Aggregate` builder registered with `register_aggregate`: `run_checks` evaluates all of a
table's checks in one query, `evaluate` one check alone. Importing `retail_lakehouse.pipeline.quality`
registers them; a new kind is a function here with the same decorator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retail_lakehouse.engine import spark_functions
from retail_lakehouse.pipeline.quality_model import (
    Aggregate,
    CheckContext,
    CheckOutcome,
    Scope,
    reference_problems,
    register_aggregate,
    split_reference,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

def _ratio(bad: int, total: int) -> float:
    return bad / total if total else 0.0


def _ratio_outcome(bad: int, total: int, limit: float, what: str) -> CheckOutcome:
    ratio = _ratio(bad, total)
    return CheckOutcome(
        ratio <= limit,
        ratio,
        float(limit),
        f"{bad} of {total} rows ({ratio:.2%}) {what}",
        evidence={"violations": bad, "rows": total, "ratio": ratio, "max_violation_ratio": float(limit)},
    )


def _columns(arguments: Mapping[str, Any], key: str = "columns") -> list[str]:
    value = arguments[key]
    return [value] if isinstance(value, str) else list(value)


def _need_list(key: str) -> Callable[[Mapping[str, Any]], list[str]]:
    def check(arguments: Mapping[str, Any]) -> list[str]:
        value = arguments.get(key)
        ok = isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        )
        return [] if ok else [f"{key!r} must be a column name or a non-empty list of column names"]

    return check


@register_aggregate(
    "not_null", required=("columns",), optional=("max_violation_ratio",), validate=_need_list("columns")
)
def check_not_null(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Rows with a NULL in any of `columns`."""
    F = spark_functions()
    cols = _columns(arguments)
    any_null = F.lit(False)
    for c in cols:
        any_null = any_null | F.col(c).isNull()

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        return _ratio_outcome(
            int(values[1] or 0),
            int(values[0]),
            float(arguments.get("max_violation_ratio", 0)),
            f"have a NULL in {', '.join(cols)}",
        )

    return Aggregate((F.count(F.when(keep, 1)), F.sum(F.when(keep & any_null, 1).otherwise(0))), finish)


@register_aggregate(
    "unique", required=("columns",), optional=("max_violation_ratio",), validate=_need_list("columns")
)
def check_unique(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Rows beyond the first of each duplicated `columns` combination."""
    F = spark_functions()
    cols = _columns(arguments)
    # Aliased keys: Sail 0.7 fails a nested aggregate over a Delta partition column grouped by name
    # ("Physical input schema should be the same as ... logical", nullability of the partition column).
    groups = scope.ctx.df.filter(keep).groupBy(*[F.col(c).alias(f"__key{i}") for i, c in enumerate(cols)]).count()
    counts = (
        F.coalesce(F.sum("count"), F.lit(0)),
        F.coalesce(F.sum(F.when(F.col("count") > 1, F.col("count") - 1).otherwise(0)), F.lit(0)),
    )

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        return _ratio_outcome(
            int(values[1]),
            int(values[0]),
            float(arguments.get("max_violation_ratio", 0)),
            f"repeat a value of ({', '.join(cols)})",
        )

    return Aggregate((), finish, ((groups, counts),))


def _ri_validate(arguments: Mapping[str, Any]) -> list[str]:
    return reference_problems(arguments.get("references"))


@register_aggregate(
    "referential_integrity",
    required=("column", "references"),
    optional=("unknown_value", "unknown_is_violation", "max_violation_ratio"),
    validate=_ri_validate,
)
def check_referential_integrity(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Non-NULL values of `column` missing from `references` (``layer.table.column``).

    ``unknown_value`` (e.g. -1, the unknown member) is accepted unless ``unknown_is_violation`` is true.
    """
    F = spark_functions()
    column = arguments["column"]
    parent = F.col(scope.marker(column, arguments["references"]))
    value = F.col(column)
    missing = value.isNotNull() & parent.isNull()
    unknown = arguments.get("unknown_value")
    if unknown is not None and not arguments.get("unknown_is_violation", False):
        missing = missing & (value != F.lit(unknown))
    note = (
        f" (unknown member {unknown} allowed)"
        if unknown is not None and not arguments.get("unknown_is_violation", False)
        else ""
    )

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        return _ratio_outcome(
            int(values[1] or 0),
            int(values[0]),
            float(arguments.get("max_violation_ratio", 0)),
            f"have a {column} not in {arguments['references']}{note}",
        )

    return Aggregate((F.count(F.when(keep, 1)), F.sum(F.when(keep & missing, 1).otherwise(0))), finish)


def _range_validate(arguments: Mapping[str, Any]) -> list[str]:
    if "min" not in arguments and "max" not in arguments:
        return ["value_range needs `min`, `max` or both"]
    return []


@register_aggregate(
    "value_range",
    required=("column",),
    optional=("min", "max", "max_violation_ratio"),
    validate=_range_validate,
)
def check_value_range(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Non-NULL values of `column` outside [`min`, `max`]."""
    F = spark_functions()
    col = F.col(arguments["column"])
    outside = F.lit(False)
    if "min" in arguments:
        outside = outside | (col < F.lit(arguments["min"]))
    if "max" in arguments:
        outside = outside | (col > F.lit(arguments["max"]))
    bounds = f"[{arguments.get('min', '-inf')}, {arguments.get('max', '+inf')}]"

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        return _ratio_outcome(
            int(values[1] or 0),
            int(values[0]),
            float(arguments.get("max_violation_ratio", 0)),
            f"have {arguments['column']} outside {bounds}",
        )

    bad = F.sum(F.when(keep & col.isNotNull() & outside, 1).otherwise(0))
    return Aggregate((F.count(F.when(keep, 1)), bad), finish)


def _max_timestamp_column(column: str, keep: Column | None = None) -> Column:
    F = spark_functions()
    value = F.expr(f"try_cast(`{column}` AS timestamp)")
    return F.date_format(F.max(value if keep is None else F.when(keep, value)), "yyyy-MM-dd HH:mm:ss.SSSSSS")


def _parse_timestamp(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _freshness_validate(arguments: Mapping[str, Any]) -> list[str]:
    problems = (
        [] if "reference" not in arguments else reference_problems(arguments["reference"], "reference")
    )
    if not isinstance(arguments.get("max_lag_hours"), int | float):
        problems.append("'max_lag_hours' must be a number")
    return problems


@register_aggregate(
    "freshness", required=("column", "max_lag_hours"), optional=("reference",), validate=_freshness_validate
)
def check_freshness(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Hours between the business date and the newest `column` value.

    The business date is ``business_date`` given at run time (a date means the end of that day), else
    the newest value of ``reference`` (``layer.table.column``, e.g. the same column upstream). Never the
    wall clock: generated history is judged against its own time.
    """
    column, limit = arguments["column"], float(arguments["max_lag_hours"])
    frames: tuple[tuple[DataFrame, tuple[Column, ...]], ...] = ()
    if scope.ctx.business_date is None and "reference" in arguments:
        ref_table, ref_column = split_reference(arguments["reference"])
        frames = ((scope.ctx.read(ref_table), (_max_timestamp_column(ref_column),)),)

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        newest = _parse_timestamp(values[0])
        if ctx.business_date is not None:
            as_of, basis = ctx.business_date, "business_date"
        elif "reference" in arguments:
            as_of, basis = _parse_timestamp(values[1]), f"max({arguments['reference']})"
            if as_of is None:
                return CheckOutcome(
                    True, 0.0, limit, f"{arguments['reference']} has no rows: nothing to be fresh against"
                )
        else:
            return CheckOutcome(
                False, None, limit, "no business date: pass business_date or set a `reference` argument"
            )
        if newest is None:
            return CheckOutcome(False, None, limit, f"no {column} values; business date {as_of} ({basis})")
        lag = max((as_of - newest).total_seconds() / 3600, 0.0)
        return CheckOutcome(
            lag <= limit,
            round(lag, 3),
            limit,
            f"newest {column} {newest} is {lag:.1f} h behind {as_of} ({basis}); limit {limit:g} h",
            evidence={"newest": str(newest), "as_of": str(as_of), "basis": basis, "lag_hours": round(lag, 3),
                      "max_lag_hours": limit},
        )

    return Aggregate((_max_timestamp_column(column, keep),), finish, frames)


def _reconciliation_validate(arguments: Mapping[str, Any]) -> list[str]:
    has_source, from_monitoring = "source" in arguments, bool(arguments.get("from_monitoring"))
    if has_source == from_monitoring:
        return ["row_count_reconciliation needs exactly one of `source` (a table) or `from_monitoring: true`"]
    problems = []
    if "exists_in" in arguments:
        spec = arguments["exists_in"]
        if not isinstance(spec, Mapping) or "column" not in spec or "references" not in spec:
            problems.append("'exists_in' must be {column, references: layer.table.column}")
        else:
            problems += reference_problems(spec["references"], "exists_in.references")
    return problems


def _latest_reconciliation(ctx: CheckContext) -> list[Any]:
    """Reconciliation rows of this table for the run: `run_id` when present, else its latest run.

    One query per quality run for every table: each table's rows of `run_id` and of its latest run
    (the run of its newest ``processed_at``), kept in ``ctx.memo``.
    """
    from pyspark.sql import Window

    F = spark_functions()
    key = ("reconciliation", ctx.run_id)
    if key not in ctx.memo:
        rows = ctx.read("monitoring.reconciliation")
        newest = Window.partitionBy("table_name").orderBy(F.col("processed_at").desc())
        latest = (
            rows.select("table_name", "run_id", F.row_number().over(newest).alias("_rank"))
            .filter(F.col("_rank") == 1)
            .select(F.col("table_name").alias("_table"), F.col("run_id").alias("_latest_run"))
        )
        picked = rows.join(latest, rows["table_name"] == latest["_table"], "inner").filter(
            (F.col("run_id") == F.lit(ctx.run_id)) | (F.col("run_id") == F.col("_latest_run"))
        )
        by_table: dict[str, list[Any]] = {}
        for row in picked.collect():
            by_table.setdefault(row["table_name"], []).append(row)
        ctx.memo[key] = by_table
    rows = ctx.memo[key].get(ctx.full_name(ctx.table), [])
    mine = [r for r in rows if r["run_id"] == ctx.run_id]
    return mine or [r for r in rows if r["run_id"] == r["_latest_run"]]


@register_aggregate(
    "row_count_reconciliation",
    optional=("source", "source_where", "exists_in", "distinct", "tolerance_ratio", "from_monitoring"),
    validate=_reconciliation_validate,
)
def check_row_count_reconciliation(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Row counts agree between layers.

    With ``source``: this table's rows vs the source's (``source_where`` filters it; ``exists_in``
    keeps source rows whose ``column`` exists in ``references``; ``distinct`` counts the source's distinct
    combinations of those columns), within ``tolerance_ratio``.
    With ``from_monitoring: true``: the run's ``monitoring.reconciliation`` rows for this table are balanced.
    """
    F = spark_functions()
    if arguments.get("from_monitoring"):
        return Aggregate((), lambda values, ctx: _monitored_balance(ctx))

    ctx = scope.ctx
    source = ctx.read(arguments["source"])
    if arguments.get("source_where"):
        source = source.filter(arguments["source_where"])
    if "exists_in" in arguments:
        spec = arguments["exists_in"]
        ref_table, ref_column = split_reference(spec["references"])
        parents = ctx.read(ref_table).select(F.col(ref_column).alias(spec["column"])).distinct()
        source = source.join(parents, spec["column"], "left_semi")
    if arguments.get("distinct"):
        source = source.select(*_columns(arguments, "distinct")).distinct()

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        actual, expected = int(values[0]), int(values[1])
        diff = abs(actual - expected)
        ratio = _ratio(diff, expected) if expected else float(diff > 0)
        tolerance = float(arguments.get("tolerance_ratio", 0))
        return CheckOutcome(
            ratio <= tolerance,
            ratio,
            tolerance,
            f"{actual} rows vs {expected} in {arguments['source']} (difference {diff}, {ratio:.2%})",
            evidence={"rows": actual, "source_rows": expected, "difference": diff, "tolerance_ratio": tolerance},
        )

    return Aggregate((F.count(F.when(keep, 1)),), finish, ((source, (F.count(F.lit(1)),)),))


def _monitored_balance(ctx: CheckContext) -> CheckOutcome:
    rows = _latest_reconciliation(ctx)
    if not rows:
        return CheckOutcome(True, 0.0, 0.0, "no monitoring.reconciliation rows for this table: nothing to reconcile")
    unbalanced = [r for r in rows if not r["balanced"]]
    r = rows[0]
    details = (
        f"run {r['run_id']}: bronze {r['bronze_rows']} = silver {r['silver_rows']} + quarantined "
        f"{r['quarantined_rows']} + duplicates {r['duplicates_removed']}"
    )
    return CheckOutcome(
        not unbalanced,
        float(len(unbalanced)),
        0.0,
        ("balanced; " if not unbalanced else "NOT balanced; ") + details,
        evidence={
            "run_id": r["run_id"],
            "unbalanced_runs": sorted({str(u["run_id"]) for u in unbalanced}),
            **{k: r[k] for k in ("bronze_rows", "silver_rows", "quarantined_rows", "duplicates_removed")},
        },
    )


def _quarantine_validate(arguments: Mapping[str, Any]) -> list[str]:
    value = arguments.get("max_ratio")
    return (
        [] if isinstance(value, int | float) and 0 <= value <= 1 else ["'max_ratio' must be a number in 0..1"]
    )


@register_aggregate("quarantine_rate", required=("max_ratio",), validate=_quarantine_validate)
def check_quarantine_rate(arguments: Mapping[str, Any], keep: Column, scope: Scope) -> Aggregate:
    """Quarantined / bronze rows of the run (``monitoring.reconciliation``) at most ``max_ratio``."""
    limit = float(arguments["max_ratio"])

    def finish(values: Sequence[Any], ctx: CheckContext) -> CheckOutcome:
        rows = _latest_reconciliation(ctx)
        runs = [r["run_id"] for r in rows if r["run_id"] is not None]
        if not runs:
            return CheckOutcome(
                True, 0.0, limit, "no monitoring.reconciliation rows for this table: nothing quarantined"
            )
        # As SQL's sum: NULLs are skipped (a sum of only NULLs counts as 0 here).
        bronze = sum(r["bronze_rows"] for r in rows if r["bronze_rows"] is not None)
        quarantined = sum(r["quarantined_rows"] for r in rows if r["quarantined_rows"] is not None)
        ratio = _ratio(quarantined, bronze)
        return CheckOutcome(
            ratio <= limit,
            round(ratio, 6),
            limit,
            f"run {max(runs)}: {quarantined} of {bronze} bronze rows quarantined ({ratio:.2%})",
            evidence={"run_id": max(runs), "bronze_rows": bronze, "quarantined_rows": quarantined,
                      "max_ratio": limit},
        )

    return Aggregate((), finish)
