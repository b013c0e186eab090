"""Data-quality checks as data: YAML rule sets per table, check functions in a registry.

A rule set (``checks/<layer>_<table>.yaml``)::

    table: silver.orders
    checks:
      - name: order_id_unique
        check: unique
        arguments: {columns: [order_id]}
        criticality: error        # error | warn

Every check accepts a ``where`` argument (a SQL filter applied first). The whole set of rule sets is
validated before anything runs and every problem is reported at once (`ConfigError`). `run_checks`
evaluates them, appends one row per check to ``monitoring.quality_metrics`` (PASSED / WARN / FAILED)
and returns a `QualityReport`; ``report.raise_for_errors()`` raises afterwards, so results are
always recorded.

Freshness is measured against the business date (the upstream column's max, or ``business_date``
given at run time), never the wall clock, so generated history is not stale.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from retail_lakehouse.config import Settings, load_settings
from retail_lakehouse.errors import CheckFailedError, ConfigError, LakehouseError, ParameterError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

__all__ = [
    "CheckContext",
    "CheckOutcome",
    "CheckResult",
    "CheckSpec",
    "QualityReport",
    "evaluate",
    "known_checks",
    "load_rule_sets",
    "parse_rule_sets",
    "register",
    "run_checks",
]

Criticality = Literal["error", "warn"]
CRITICALITIES = ("error", "warn")
COMMON_ARGUMENTS = ("where",)


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class CheckSpec:
    """One validated check of a rule set."""

    table: str  # registry ref, e.g. ``silver.orders``
    name: str
    check: str
    arguments: dict[str, Any]
    criticality: Criticality


@dataclass(frozen=True)
class CheckOutcome:
    """What a check function measured: pass/fail, the metric and the threshold it was held to."""

    passed: bool
    metric_value: float | None
    threshold: float | None
    details: str


@dataclass(frozen=True)
class CheckResult:
    """A check's outcome with its identity, as written to ``monitoring.quality_metrics``."""

    table_name: str
    check_name: str
    check_type: str
    criticality: str
    check_status: str
    metric_value: float | None
    threshold: float | None
    details: str


@dataclass
class CheckContext:
    """What a check function gets: the table's rows (``where`` applied) and ways to read others.

    Attributes:
        table: registry ref of the checked table.
        df: its rows.
        run_id: the quality run (also used to find the pipeline run's reconciliation rows).
        business_date: the run's business date, if given.
        read: registry ref -> DataFrame (empty frame of the schema when the table does not exist).
        full_name: registry ref -> three-part name.
    """

    table: str
    df: DataFrame
    run_id: str
    business_date: dt.datetime | None
    read: Callable[[str], DataFrame]
    full_name: Callable[[str], str]


CheckFunction = Callable[[CheckContext, Mapping[str, Any]], CheckOutcome]


@dataclass(frozen=True)
class _Kind:
    name: str
    function: CheckFunction
    required: tuple[str, ...]
    optional: tuple[str, ...]
    validate: Callable[[Mapping[str, Any]], list[str]] | None


_CHECKS: dict[str, _Kind] = {}


def register(
    name: str,
    *,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    validate: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under `name` (decorator); its arguments are validated by these lists."""

    def decorator(fn: CheckFunction) -> CheckFunction:
        _CHECKS[name] = _Kind(name, fn, tuple(required), tuple(optional), validate)
        return fn

    return decorator


def known_checks() -> list[str]:
    return sorted(_CHECKS)


def get_check(name: str) -> _Kind:
    """The registered check `name`.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    try:
        return _CHECKS[name]
    except KeyError:
        raise ConfigError(f"unknown check {name!r}; known checks: {', '.join(known_checks())}") from None


# ----------------------------------------------------------------------------- rule sets


def _validate_check(kind: _Kind, arguments: Mapping[str, Any]) -> list[str]:
    problems = [f"missing argument {a!r}" for a in kind.required if a not in arguments]
    allowed = {*kind.required, *kind.optional, *COMMON_ARGUMENTS}
    problems += [
        f"unknown argument {a!r} (allowed: {', '.join(sorted(allowed))})"
        for a in arguments
        if a not in allowed
    ]
    if kind.validate and not problems:
        problems += kind.validate(arguments)
    return problems


def parse_rule_sets(
    raw_sets: Sequence[tuple[str, Any]], settings: Settings | None = None
) -> dict[str, list[CheckSpec]]:
    """Validate rule sets and return table ref -> checks.

    Args:
        raw_sets: (source name for messages, parsed YAML) pairs.
        settings: environment, to resolve table names.

    Raises:
        ConfigError: every problem of every rule set, in one message.
    """
    from retail_lakehouse.errors import TableNotFoundError
    from retail_lakehouse.tables import registry

    settings = settings or load_settings()
    problems: list[str] = []
    out: dict[str, list[CheckSpec]] = {}
    for source, raw in raw_sets:
        if not isinstance(raw, Mapping):
            problems.append(f"{source}: a rule set is a mapping with `table` and `checks`")
            continue
        try:
            ref = registry().get(str(raw.get("table", "")), settings=settings).ref
        except TableNotFoundError as exc:
            problems.append(f"{source}: table: {exc}")
            ref = str(raw.get("table"))
        checks = raw.get("checks")
        if not isinstance(checks, list) or not checks:
            problems.append(f"{source}: `checks` must be a non-empty list")
            continue
        seen: set[str] = {c.name for c in out.get(ref, [])}
        for i, entry in enumerate(checks):
            where = f"{source}: checks[{i}]"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: a check is a mapping {{name, check, arguments, criticality}}")
                continue
            name = entry.get("name")
            where = f"{where} ({name})" if name else where
            unknown_keys = set(entry) - {"name", "check", "arguments", "criticality"}
            if unknown_keys:
                problems.append(f"{where}: unknown key(s) {sorted(unknown_keys)}")
            if not name or not isinstance(name, str):
                problems.append(f"{where}: missing `name`")
            elif name in seen:
                problems.append(f"{where}: duplicate check name {name!r} for {ref}")
            else:
                seen.add(name)
            criticality = entry.get("criticality", "error")
            if criticality not in CRITICALITIES:
                problems.append(
                    f"{where}: criticality must be one of {', '.join(CRITICALITIES)}, not {criticality!r}"
                )
            arguments = entry.get("arguments") or {}
            if not isinstance(arguments, Mapping):
                problems.append(f"{where}: `arguments` must be a mapping")
                arguments = {}
            check = entry.get("check")
            try:
                kind = get_check(str(check))
            except ConfigError as exc:
                problems.append(f"{where}: {exc}")
                continue
            problems += [f"{where}: {p}" for p in _validate_check(kind, arguments)]
            out.setdefault(ref, []).append(
                CheckSpec(ref, str(name), kind.name, dict(arguments), criticality)  # type: ignore[arg-type]
            )
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the quality rule sets:\n  " + "\n  ".join(problems))
    return out


def load_rule_sets(
    directory: str | Path | None = None, settings: Settings | None = None
) -> dict[str, list[CheckSpec]]:
    """Read and validate every ``*.yaml`` rule set (default: the packaged ``checks/`` folder).

    Raises:
        ConfigError: unreadable YAML or invalid rule sets (all problems at once).
    """
    if directory is None:
        files = [
            (f.name, f.read_text())
            for f in resources.files("retail_lakehouse").joinpath("checks").iterdir()
            if f.name.endswith(".yaml")
        ]
    else:
        files = [(p.name, p.read_text()) for p in Path(directory).glob("*.yaml")]
    raw_sets, problems = [], []
    for name, text in sorted(files):
        try:
            raw_sets.append((name, yaml.safe_load(text)))
        except yaml.YAMLError as exc:
            problems.append(f"{name}: not valid YAML: {exc}")
    try:
        parsed = parse_rule_sets(raw_sets, settings)
    except ConfigError as exc:
        problems.append(str(exc))
        parsed = {}
    if problems:
        raise ConfigError("\n".join(problems))
    return parsed


# ----------------------------------------------------------------------------- check functions


def _F():  # noqa: N802 - pyspark.sql.functions, imported lazily
    from pyspark.sql import functions as F

    return F


def _ratio(bad: int, total: int) -> float:
    return bad / total if total else 0.0


def _ratio_outcome(bad: int, total: int, limit: float, what: str) -> CheckOutcome:
    ratio = _ratio(bad, total)
    return CheckOutcome(ratio <= limit, ratio, float(limit), f"{bad} of {total} rows ({ratio:.2%}) {what}")


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


def _reference_problems(value: Any, key: str = "references") -> list[str]:
    if not isinstance(value, str) or value.count(".") != 2:
        return [f"{key!r} must be 'layer.table.column', e.g. 'silver.customers.customer_id', not {value!r}"]
    return []


def _split_reference(value: str) -> tuple[str, str]:
    layer, table, column = value.split(".")
    return f"{layer}.{table}", column


@register(
    "not_null", required=("columns",), optional=("max_violation_ratio",), validate=_need_list("columns")
)
def check_not_null(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Rows with a NULL in any of `columns`."""
    F = _F()
    cols = _columns(arguments)
    any_null = F.lit(False)
    for c in cols:
        any_null = any_null | F.col(c).isNull()
    row = ctx.df.agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.when(any_null, 1).otherwise(0)).alias("bad")
    ).collect()[0]
    return _ratio_outcome(
        int(row["bad"] or 0),
        int(row["n"]),
        float(arguments.get("max_violation_ratio", 0)),
        f"have a NULL in {', '.join(cols)}",
    )


@register("unique", required=("columns",), optional=("max_violation_ratio",), validate=_need_list("columns"))
def check_unique(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Rows beyond the first of each duplicated `columns` combination."""
    F = _F()
    cols = _columns(arguments)
    # Aliased keys: Sail 0.7 fails a nested aggregate over a Delta partition column grouped by name
    # ("Physical input schema should be the same as ... logical", nullability of the partition column).
    groups = ctx.df.groupBy(*[F.col(c).alias(f"__key{i}") for i, c in enumerate(cols)]).count()
    row = groups.agg(
        F.coalesce(F.sum("count"), F.lit(0)).alias("n"),
        F.coalesce(F.sum(F.when(F.col("count") > 1, F.col("count") - 1).otherwise(0)), F.lit(0)).alias("bad"),
    ).collect()[0]
    return _ratio_outcome(
        int(row["bad"]),
        int(row["n"]),
        float(arguments.get("max_violation_ratio", 0)),
        f"repeat a value of ({', '.join(cols)})",
    )


def _ri_validate(arguments: Mapping[str, Any]) -> list[str]:
    return _reference_problems(arguments.get("references"))


@register(
    "referential_integrity",
    required=("column", "references"),
    optional=("unknown_value", "unknown_is_violation", "max_violation_ratio"),
    validate=_ri_validate,
)
def check_referential_integrity(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Non-NULL values of `column` missing from `references` (``layer.table.column``).

    ``unknown_value`` (e.g. -1, the unknown member) is accepted unless ``unknown_is_violation`` is true.
    """
    F = _F()
    column = arguments["column"]
    ref_table, ref_column = _split_reference(arguments["references"])
    values = ctx.df.select(F.col(column).alias("_v")).filter(F.col("_v").isNotNull())
    unknown = arguments.get("unknown_value")
    if unknown is not None and not arguments.get("unknown_is_violation", False):
        values = values.filter(F.col("_v") != F.lit(unknown))
    parents = ctx.read(ref_table).select(F.col(ref_column).alias("_v")).distinct()
    total = ctx.df.count()
    bad = values.join(parents, "_v", "left_anti").count()
    note = (
        f" (unknown member {unknown} allowed)"
        if unknown is not None and not arguments.get("unknown_is_violation", False)
        else ""
    )
    return _ratio_outcome(
        bad,
        total,
        float(arguments.get("max_violation_ratio", 0)),
        f"have a {column} not in {arguments['references']}{note}",
    )


def _range_validate(arguments: Mapping[str, Any]) -> list[str]:
    if "min" not in arguments and "max" not in arguments:
        return ["value_range needs `min`, `max` or both"]
    return []


@register(
    "value_range",
    required=("column",),
    optional=("min", "max", "max_violation_ratio"),
    validate=_range_validate,
)
def check_value_range(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Non-NULL values of `column` outside [`min`, `max`]."""
    F = _F()
    col = F.col(arguments["column"])
    outside = F.lit(False)
    if "min" in arguments:
        outside = outside | (col < F.lit(arguments["min"]))
    if "max" in arguments:
        outside = outside | (col > F.lit(arguments["max"]))
    row = ctx.df.agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.when(col.isNotNull() & outside, 1).otherwise(0)).alias("bad")
    ).collect()[0]
    bounds = f"[{arguments.get('min', '-inf')}, {arguments.get('max', '+inf')}]"
    return _ratio_outcome(
        int(row["bad"] or 0),
        int(row["n"]),
        float(arguments.get("max_violation_ratio", 0)),
        f"have {arguments['column']} outside {bounds}",
    )


def _max_timestamp(df: DataFrame, column: str) -> dt.datetime | None:
    F = _F()
    value = df.select(
        F.date_format(
            F.max(F.expr(f"try_cast(`{column}` AS timestamp)")), "yyyy-MM-dd HH:mm:ss.SSSSSS"
        ).alias("m")
    ).collect()[0]["m"]
    return dt.datetime.fromisoformat(value) if value else None


def _freshness_validate(arguments: Mapping[str, Any]) -> list[str]:
    problems = (
        [] if "reference" not in arguments else _reference_problems(arguments["reference"], "reference")
    )
    if not isinstance(arguments.get("max_lag_hours"), int | float):
        problems.append("'max_lag_hours' must be a number")
    return problems


@register(
    "freshness", required=("column", "max_lag_hours"), optional=("reference",), validate=_freshness_validate
)
def check_freshness(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Hours between the business date and the newest `column` value.

    The business date is ``business_date`` given at run time (a date means the end of that day), else
    the newest value of ``reference`` (``layer.table.column``, e.g. the same column upstream). Never the
    wall clock: generated history is judged against its own time.
    """
    column, limit = arguments["column"], float(arguments["max_lag_hours"])
    newest = _max_timestamp(ctx.df, column)
    if ctx.business_date is not None:
        as_of, basis = ctx.business_date, "business_date"
    elif "reference" in arguments:
        ref_table, ref_column = _split_reference(arguments["reference"])
        as_of, basis = _max_timestamp(ctx.read(ref_table), ref_column), f"max({arguments['reference']})"
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
    )


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
            problems += _reference_problems(spec["references"], "exists_in.references")
    return problems


def _latest_reconciliation(ctx: CheckContext) -> DataFrame:
    """Reconciliation rows of this table for the run: `run_id` when present, else its latest run."""
    F = _F()
    rows = ctx.read("monitoring.reconciliation").filter(F.col("table_name") == ctx.full_name(ctx.table))
    mine = rows.filter(F.col("run_id") == ctx.run_id)
    if mine.limit(1).count():
        return mine
    latest = rows.orderBy(F.col("processed_at").desc()).select("run_id").limit(1).collect()
    return rows.filter(F.col("run_id") == latest[0]["run_id"]) if latest else rows.limit(0)


@register(
    "row_count_reconciliation",
    optional=("source", "source_where", "exists_in", "distinct", "tolerance_ratio", "from_monitoring"),
    validate=_reconciliation_validate,
)
def check_row_count_reconciliation(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Row counts agree between layers.

    With ``source``: this table's rows vs the source's (``source_where`` filters it; ``exists_in``
    keeps source rows whose ``column`` exists in ``references``; ``distinct`` counts the source's distinct
    combinations of those columns), within ``tolerance_ratio``.
    With ``from_monitoring: true``: the run's ``monitoring.reconciliation`` rows for this table are balanced.
    """
    F = _F()
    if arguments.get("from_monitoring"):
        rows = _latest_reconciliation(ctx).collect()
        if not rows:
            return CheckOutcome(
                True, 0.0, 0.0, "no monitoring.reconciliation rows for this table: nothing to reconcile"
            )
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
        )
    source = ctx.read(arguments["source"])
    if arguments.get("source_where"):
        source = source.filter(arguments["source_where"])
    if "exists_in" in arguments:
        spec = arguments["exists_in"]
        ref_table, ref_column = _split_reference(spec["references"])
        parents = ctx.read(ref_table).select(F.col(ref_column).alias(spec["column"])).distinct()
        source = source.join(parents, spec["column"], "left_semi")
    if arguments.get("distinct"):
        source = source.select(*_columns(arguments, "distinct")).distinct()
    expected, actual = source.count(), ctx.df.count()
    diff = abs(actual - expected)
    ratio = _ratio(diff, expected) if expected else float(diff > 0)
    tolerance = float(arguments.get("tolerance_ratio", 0))
    return CheckOutcome(
        ratio <= tolerance,
        ratio,
        tolerance,
        f"{actual} rows vs {expected} in {arguments['source']} (difference {diff}, {ratio:.2%})",
    )


def _quarantine_validate(arguments: Mapping[str, Any]) -> list[str]:
    value = arguments.get("max_ratio")
    return (
        [] if isinstance(value, int | float) and 0 <= value <= 1 else ["'max_ratio' must be a number in 0..1"]
    )


@register("quarantine_rate", required=("max_ratio",), validate=_quarantine_validate)
def check_quarantine_rate(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
    """Quarantined / bronze rows of the run (``monitoring.reconciliation``) at most ``max_ratio``."""
    F = _F()
    limit = float(arguments["max_ratio"])
    row = (
        _latest_reconciliation(ctx)
        .agg(
            F.sum("bronze_rows").alias("b"),
            F.sum("quarantined_rows").alias("q"),
            F.max("run_id").alias("run"),
        )
        .collect()[0]
    )
    if row["run"] is None:
        return CheckOutcome(
            True, 0.0, limit, "no monitoring.reconciliation rows for this table: nothing quarantined"
        )
    bronze, quarantined = int(row["b"] or 0), int(row["q"] or 0)
    ratio = _ratio(quarantined, bronze)
    return CheckOutcome(
        ratio <= limit,
        round(ratio, 6),
        limit,
        f"run {row['run']}: {quarantined} of {bronze} bronze rows quarantined ({ratio:.2%})",
    )


# ----------------------------------------------------------------------------- running


def _status(outcome: CheckOutcome, criticality: str) -> str:
    if outcome.passed:
        return "PASSED"
    return "WARN" if criticality == "warn" else "FAILED"


def evaluate(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """Run one check on its context; an exception becomes a failed result carrying its message."""
    kind = get_check(spec.check)
    if spec.arguments.get("where"):
        ctx = CheckContext(
            ctx.table,
            ctx.df.filter(spec.arguments["where"]),
            ctx.run_id,
            ctx.business_date,
            ctx.read,
            ctx.full_name,
        )
    try:
        outcome = kind.function(ctx, spec.arguments)
    except Exception as exc:  # a broken check must not hide the others' results
        outcome = CheckOutcome(
            False, None, None, f"check could not run: {type(exc).__name__}: {str(exc)[:500]}"
        )
    where = f" [where {spec.arguments['where']}]" if spec.arguments.get("where") else ""
    return CheckResult(
        table_name=ctx.full_name(spec.table),
        check_name=spec.name,
        check_type=spec.check,
        criticality=spec.criticality,
        check_status=_status(outcome, spec.criticality),
        metric_value=None if outcome.metric_value is None else float(outcome.metric_value),
        threshold=None if outcome.threshold is None else float(outcome.threshold),
        details=outcome.details + where,
    )


@dataclass
class QualityReport:
    """Results of one quality run (already written to ``monitoring.quality_metrics``)."""

    run_id: str
    results: list[CheckResult] = field(default_factory=list)
    check_timestamp: dt.datetime | None = None

    @property
    def failed_errors(self) -> list[CheckResult]:
        return [r for r in self.results if r.check_status == "FAILED"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.check_status == "WARN"]

    @property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.results])

    def summary(self) -> dict[str, int]:
        out = {"PASSED": 0, "WARN": 0, "FAILED": 0}
        for r in self.results:
            out[r.check_status] += 1
        return out

    def raise_for_errors(self) -> None:
        """Raise when an error-criticality check failed.

        Raises:
            CheckFailedError: names each failed check and its details.
        """
        if self.failed_errors:
            lines = [
                f"{r.table_name}.{r.check_name} ({r.check_type}): {r.details}" for r in self.failed_errors
            ]
            raise CheckFailedError(
                f"{len(lines)} error check(s) failed in run {self.run_id} (results are in "
                "monitoring.quality_metrics; see the quality-failure runbook):\n  " + "\n  ".join(lines)
            )


def _business_datetime(value: str | dt.date | dt.datetime | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value + dt.timedelta(days=1), dt.time())
    try:
        if len(str(value)) == 10:
            return _business_datetime(dt.date.fromisoformat(str(value)))
        return _business_datetime(dt.datetime.fromisoformat(str(value)))
    except ValueError:
        raise ParameterError("business_date", f"{value!r} is not a date; use YYYY-MM-DD") from None


def run_checks(
    tables: Sequence[str] | None = None,
    *,
    run_id: str,
    business_date: str | dt.date | dt.datetime | None = None,
    rule_sets: Mapping[str, list[CheckSpec]] | None = None,
    env: str | None = None,
) -> QualityReport:
    """Run the checks of some tables, append the results to ``monitoring.quality_metrics``, return them.

    Args:
        tables: table names (``orders``, ``silver.orders``, full names); None = every table with checks.
        run_id: the pipeline run; its reconciliation rows are the ones judged.
        business_date: the data's business date for freshness (a date = the end of that day).
        rule_sets: validated rule sets (default: the packaged ``checks/*.yaml``).
        env: environment.

    Raises:
        ConfigError: invalid rule sets (every problem listed).
        ParameterError: a table without checks, or a bad business_date.
    """
    from retail_lakehouse import engine, writes
    from retail_lakehouse.tables import registry

    settings = load_settings(env)
    as_of = _business_datetime(business_date)
    sets = dict(rule_sets) if rule_sets is not None else load_rule_sets(settings=settings)
    if tables is None:
        refs = sorted(sets)
    else:
        refs = []
        for name in tables:
            # A short name means the table that has checks (`orders` -> silver.orders, not bronze.orders).
            with_checks = [r for r in sets if r.split(".")[1] == name]
            try:
                ref = with_checks[0] if len(with_checks) == 1 else registry().get(name, settings=settings).ref
            except LakehouseError as exc:
                raise ParameterError("tables", str(exc)) from None
            if ref not in sets:
                raise ParameterError(
                    "tables", f"{ref} has no quality checks; tables with checks: {', '.join(sorted(sets))}"
                )
            refs.append(ref)
    spark = engine.get_spark(settings.env)
    cache: dict[str, DataFrame] = {}

    def full_name(ref: str) -> str:
        return registry().get(ref, settings=settings).full_name(settings)

    def read(ref: str) -> DataFrame:
        if ref not in cache:
            tdef = registry().get(ref, settings=settings)
            full = tdef.full_name(settings)
            exists = (
                (engine.table_dir(full, settings) / "_delta_log").is_dir()
                if settings.is_local
                else spark.catalog.tableExists(full)
            )
            if exists:
                writes.ensure_table(tdef, env=settings.env)  # registers a table another session created
                cache[ref] = spark.table(full)
            else:
                cache[ref] = spark.createDataFrame([], tdef.ddl())
        return cache[ref]

    started = dt.datetime.now(dt.UTC)
    report = QualityReport(run_id=run_id, check_timestamp=started)
    for ref in refs:
        ctx = CheckContext(ref, read(ref), run_id, as_of, read, full_name)
        report.results += [evaluate(spec, ctx) for spec in sets[ref]]
    if report.results:
        rows = [
            (
                started,
                run_id,
                r.table_name,
                r.check_name,
                r.check_type,
                r.criticality,
                r.check_status,
                r.metric_value,
                r.threshold,
                r.details,
            )
            for r in report.results
        ]
        tdef = registry().get("monitoring.quality_metrics", settings=settings)
        writes.write_table(spark.createDataFrame(rows, tdef.ddl()), tdef, mode="append", env=settings.env)
    return report


def describe_rule_sets(rule_sets: Mapping[str, list[CheckSpec]]) -> str:
    """The rule sets as indented JSON, for notebooks and docs."""
    return json.dumps(
        {t: [c.__dict__ for c in checks] for t, checks in rule_sets.items()}, indent=2, default=str
    )
