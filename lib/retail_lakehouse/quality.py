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
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from retail_lakehouse.config import Settings, load_settings, load_yaml
from retail_lakehouse.errors import CheckFailedError, ConfigError, LakehouseError, ParameterError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame

__all__ = [
    "CheckContext",
    "CheckOutcome",
    "CheckResult",
    "CheckSpec",
    "QualityReport",
    "Aggregate",
    "Scope",
    "evaluate",
    "evaluate_table",
    "known_checks",
    "load_rule_sets",
    "parse_rule_sets",
    "register",
    "register_aggregate",
    "run_checks",
]

log = logging.getLogger(__name__)

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
    memo: dict[Any, Any] = field(default_factory=dict)  # shared by one run's contexts (tables do not change)


CheckFunction = Callable[[CheckContext, Mapping[str, Any]], CheckOutcome]


@dataclass(frozen=True)
class Aggregate:
    """A check as aggregates, so a table's checks share one query.

    Attributes:
        columns: aggregates over the checked rows (joined with `Scope.marker` references); they count
            only rows where the builder's `keep` holds.
        finish: (values, context) -> outcome; values are those of `columns`, then of `frames`.
        frames: (frame, aggregates) pairs over other rows (a grouping, another table); each gives one row.
    """

    columns: tuple[Column, ...]
    finish: Callable[[Sequence[Any], CheckContext], CheckOutcome]
    frames: tuple[tuple[DataFrame, tuple[Column, ...]], ...] = ()


class Scope:
    """What an aggregate builder works with: the checked table's context and shared reference joins."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.markers: dict[tuple[str, str], str] = {}

    def marker(self, column: str, reference: str) -> str:
        """The column holding `reference`'s value matching `column` (NULL when it has none there)."""
        return self.markers.setdefault((column, reference), f"__ref{len(self.markers)}")

    def joined(self) -> DataFrame:
        """The checked rows left-joined with each distinct reference column asked for."""
        F = _F()
        df = self.ctx.df
        for (column, reference), marker in self.markers.items():
            ref_table, ref_column = _split_reference(reference)
            # Distinct values: the left join keeps exactly one row per checked row.
            parents = self.ctx.read(ref_table).select(F.col(ref_column).alias(marker)).distinct()
            df = df.join(parents, F.col(column) == F.col(marker), "left")
        return df

    def query(self, aggregates: Sequence[Aggregate]) -> list[list[Any]]:
        """Every aggregate's values, from one query (single-row frames cross-joined)."""
        main_columns: list[Column] = []
        frames: list[DataFrame] = []
        spans: list[list[tuple[int, int]]] = []
        total = 0
        for agg in aggregates:
            parts = [(total, total + len(agg.columns))]
            main_columns += [c.alias(f"__v{total + k}") for k, c in enumerate(agg.columns)]
            total += len(agg.columns)
            for frame, columns in agg.frames:
                frames.append(frame.agg(*[c.alias(f"__f{total + k}") for k, c in enumerate(columns)]))
                parts.append((total, total + len(columns)))
                total += len(columns)
            spans.append(parts)
        query = self.joined().agg(*main_columns) if main_columns else None
        for frame in frames:
            query = frame if query is None else query.crossJoin(frame)
        if query is None:
            return [[] for _ in aggregates]
        row = query.collect()[0]
        by_position = {int(name[3:]): row[name] for name in row.asDict()}
        return [[by_position[p] for a, b in parts for p in range(a, b)] for parts in spans]


@dataclass(frozen=True)
class _Kind:
    name: str
    function: CheckFunction
    required: tuple[str, ...]
    optional: tuple[str, ...]
    validate: Callable[[Mapping[str, Any]], list[str]] | None
    aggregate: AggregateBuilder | None = None


AggregateBuilder = Callable[[Mapping[str, Any], "Column", Scope], Aggregate]
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


def register_aggregate(
    name: str,
    *,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    validate: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> Callable[[AggregateBuilder], AggregateBuilder]:
    """Register a check given as an `Aggregate` builder (decorator): ``builder(arguments, keep, scope)``.

    `run_checks` evaluates a table's aggregate checks in one query (``keep`` is the check's ``where``);
    alone (`evaluate`) the check runs as a query of its own.
    """

    def decorator(builder: AggregateBuilder) -> AggregateBuilder:
        def function(ctx: CheckContext, arguments: Mapping[str, Any]) -> CheckOutcome:
            scope = Scope(ctx)
            agg = builder(arguments, _F().lit(True), scope)  # evaluate() applied `where` already
            return agg.finish(scope.query([agg])[0], ctx)

        _CHECKS[name] = _Kind(name, function, tuple(required), tuple(optional), validate, builder)
        return builder

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
            raw_sets.append((name, load_yaml(text)))
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


# ----------------------------------------------------------------------------- helpers of check functions


def _F():  # noqa: N802 - pyspark.sql.functions, imported lazily
    from pyspark.sql import functions as F

    return F


def _reference_problems(value: Any, key: str = "references") -> list[str]:
    if not isinstance(value, str) or value.count(".") != 2:
        return [f"{key!r} must be 'layer.table.column', e.g. 'silver.customers.customer_id', not {value!r}"]
    return []


def _split_reference(value: str) -> tuple[str, str]:
    layer, table, column = value.split(".")
    return f"{layer}.{table}", column


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
            ctx.memo,
        )
    try:
        outcome = kind.function(ctx, spec.arguments)
    except Exception as exc:  # a broken check must not hide the others' results
        outcome = _broken(exc)
    return _result(spec, ctx, outcome)


def _broken(exc: Exception) -> CheckOutcome:
    return CheckOutcome(False, None, None, f"check could not run: {type(exc).__name__}: {str(exc)[:500]}")


def _result(spec: CheckSpec, ctx: CheckContext, outcome: CheckOutcome) -> CheckResult:
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


def evaluate_table(specs: Sequence[CheckSpec], ctx: CheckContext) -> list[CheckResult]:
    """Run a table's checks: the aggregate ones in one query, the others one by one; results in order.

    The same outcomes as `evaluate` on each: a check's ``where`` becomes its aggregates' filter, and
    reference checks share left joins with the distinct reference values (row counts unchanged).
    When the shared query fails, each check runs alone, so a broken check is reported as it would be.
    """
    F = _F()
    scope = Scope(ctx)
    batch: dict[int, Aggregate] = {}
    for i, spec in enumerate(specs):
        builder = get_check(spec.check).aggregate
        if builder is None:
            continue
        keep = F.expr(spec.arguments["where"]) if spec.arguments.get("where") else F.lit(True)
        try:
            batch[i] = builder(spec.arguments, keep, scope)
        except Exception:  # noqa: BLE001 - run alone below, where the error is reported as usual
            continue
    values: dict[int, list[Any]] = {}
    if len(batch) > 1:
        try:
            values = dict(zip(batch, scope.query(list(batch.values())), strict=True))
        except Exception as exc:  # noqa: BLE001 - every check alone, as `evaluate` would
            log.debug("checks of %s run one by one: the shared query failed: %s", ctx.table, exc)
            values = {}
    results = []
    for i, spec in enumerate(specs):
        if i not in values:
            results.append(evaluate(spec, ctx))
            continue
        try:
            outcome = batch[i].finish(values[i], ctx)
        except Exception as exc:  # a broken check must not hide the others' results
            outcome = _broken(exc)
        results.append(_result(spec, ctx, outcome))
    return results


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
    memo: dict[Any, Any] = {}
    for ref in refs:
        ctx = CheckContext(ref, read(ref), run_id, as_of, read, full_name, memo)
        report.results += evaluate_table(sets[ref], ctx)
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


# The built-in check kinds register themselves on import.
from retail_lakehouse import quality_checks as _builtin_checks  # noqa: E402,F401
