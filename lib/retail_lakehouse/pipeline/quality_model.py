"""Data-quality checks as data: the model (check specs, outcomes, results, the context a check runs
in) and the registry of check functions (`register`, `register_aggregate`, `get_check`).

Check kinds register themselves on import (the built-in ones in `quality_checks`); rule sets are
parsed and validated in `quality_rules`, run in `quality`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from retail_lakehouse.core.errors import ConfigError
from retail_lakehouse.engine import spark_functions

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


__all__ = [
    "COMMON_ARGUMENTS",
    "CRITICALITIES",
    "STATUSES",
    "Aggregate",
    "CheckContext",
    "CheckKind",
    "CheckOutcome",
    "CheckResult",
    "CheckSpec",
    "Criticality",
    "Scope",
    "get_check",
    "known_checks",
    "reference_problems",
    "register",
    "register_aggregate",
    "split_reference",
]

log = logging.getLogger(__name__)

Criticality = Literal["error", "warn"]
CRITICALITIES = ("error", "warn")
COMMON_ARGUMENTS = ("where",)
# PASSED / WARN / FAILED are verdicts; ERROR means no verdict was possible (e.g. the table does not exist).
STATUSES = ("PASSED", "WARN", "FAILED", "ERROR")


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
    """What a check function measured: pass/fail, the metric and the threshold it was held to.

    ``status`` overrides the status derived from `passed` and the criticality (a check with a warning
    band returns ``WARN``; one that cannot judge returns ``ERROR``); ``evidence`` (counts, thresholds,
    sample keys) is recorded as JSON with the result.
    """

    passed: bool
    metric_value: float | None
    threshold: float | None
    details: str
    status: str | None = None
    evidence: Mapping[str, Any] | None = None


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
    evidence: str | None = None  # JSON: what the verdict rests on


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
        F = spark_functions()
        df = self.ctx.df
        for (column, reference), marker in self.markers.items():
            ref_table, ref_column = split_reference(reference)
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
class CheckKind:
    name: str
    function: CheckFunction
    required: tuple[str, ...]
    optional: tuple[str, ...]
    validate: Callable[[Mapping[str, Any]], list[str]] | None
    aggregate: AggregateBuilder | None = None


AggregateBuilder = Callable[[Mapping[str, Any], "Column", Scope], Aggregate]
_CHECKS: dict[str, CheckKind] = {}


def register(
    name: str,
    *,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    validate: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under `name` (decorator); its arguments are validated by these lists."""

    def decorator(fn: CheckFunction) -> CheckFunction:
        _CHECKS[name] = CheckKind(name, fn, tuple(required), tuple(optional), validate)
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
            agg = builder(arguments, spark_functions().lit(True), scope)  # evaluate() applied `where` already
            return agg.finish(scope.query([agg])[0], ctx)

        _CHECKS[name] = CheckKind(name, function, tuple(required), tuple(optional), validate, builder)
        return builder

    return decorator


def known_checks() -> list[str]:
    return sorted(_CHECKS)


def get_check(name: str) -> CheckKind:
    """The registered check `name`.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    try:
        return _CHECKS[name]
    except KeyError:
        raise ConfigError(f"unknown check {name!r}; known checks: {', '.join(known_checks())}") from None


# ----------------------------------------------------------------------------- helpers of check functions


def reference_problems(value: Any, key: str = "references") -> list[str]:
    if not isinstance(value, str) or value.count(".") != 2:
        return [f"{key!r} must be 'layer.table.column', e.g. 'silver.customers.customer_id', not {value!r}"]
    return []


def split_reference(value: str) -> tuple[str, str]:
    layer, table, column = value.split(".")
    return f"{layer}.{table}", column
