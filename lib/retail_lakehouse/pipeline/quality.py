"""Running data-quality checks: the rule sets of `quality_rules` evaluated, every result recorded.

`run_checks` evaluates a layer's rule sets, appends one row per check to
``monitoring.quality_metrics`` (PASSED / WARN / FAILED, or ERROR when no verdict is possible, e.g. the
table does not exist) with its evidence (JSON: counts, thresholds, sample keys) and returns a
`QualityReport`; ``report.raise_for_errors()`` raises afterwards, so results are always recorded.
The packaged rule sets include the registry's declarations (`quality_table_checks`): rows expected,
freshness SLA, daily volume, schema drift.

Freshness is measured against the business date (the upstream column's max, or ``business_date``
given at run time), never the wall clock, so generated history is not stale.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import CheckFailedError, LakehouseError, ParameterError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

from retail_lakehouse.engine import spark_functions
from retail_lakehouse.engine.journal import write_monitoring
from retail_lakehouse.pipeline.quality_model import (
    Aggregate,
    CheckContext,
    CheckOutcome,
    CheckResult,
    CheckSpec,
    Scope,
    get_check,
)
from retail_lakehouse.pipeline.quality_rules import load_rule_sets  # imports the built-in check kinds
from retail_lakehouse.pipeline.quality_table_checks import missing_table_result, sample_keys

__all__ = ["QualityReport", "evaluate", "evaluate_table", "run_checks", "table_ref"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- running


def _status(outcome: CheckOutcome, criticality: str) -> str:
    if outcome.status == "FAILED" and criticality == "warn":  # a warn check never fails the run
        return "WARN"
    if outcome.status:  # a check with a warning band, or one that could not judge (ERROR)
        return outcome.status
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
    evidence = {
        "metric_value": outcome.metric_value,
        "threshold": outcome.threshold,
        "criticality": spec.criticality,
        **({"where": spec.arguments["where"]} if spec.arguments.get("where") else {}),
        **(outcome.evidence or {}),
    }
    return CheckResult(
        table_name=ctx.full_name(spec.table),
        check_name=spec.name,
        check_type=spec.check,
        criticality=spec.criticality,
        check_status=_status(outcome, spec.criticality),
        metric_value=None if outcome.metric_value is None else float(outcome.metric_value),
        threshold=None if outcome.threshold is None else float(outcome.threshold),
        details=outcome.details + where,
        evidence=json.dumps(evidence, default=str, sort_keys=True),
    )


def evaluate_table(specs: Sequence[CheckSpec], ctx: CheckContext) -> list[CheckResult]:
    """Run a table's checks: the aggregate ones in one query, the others one by one; results in order.

    The same outcomes as `evaluate` on each: a check's ``where`` becomes its aggregates' filter, and
    reference checks share left joins with the distinct reference values (row counts unchanged).
    When the shared query fails, each check runs alone, so a broken check is reported as it would be.
    """
    F = spark_functions()
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


def _with_samples(result: CheckResult, spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """A failed / warned row-level check with the keys of a few offending rows in its evidence."""
    from retail_lakehouse.core.tables import registry

    sampled = ("not_null", "value_range", "referential_integrity", "unique")
    if result.check_status not in ("FAILED", "WARN") or spec.check not in sampled:
        return result
    try:
        samples = sample_keys(spec, ctx, registry().get(spec.table).keys)
    except Exception as exc:  # noqa: BLE001 - the verdict stands without its samples
        log.debug("no sample keys for %s.%s: %s", spec.table, spec.name, exc)
        return result
    evidence = {**json.loads(result.evidence or "{}"), "sample_keys": samples}
    return CheckResult(**{**result.__dict__, "evidence": json.dumps(evidence, default=str, sort_keys=True)})


def referenced_table(spec: CheckSpec, *, upstream: bool = True) -> str | None:
    """The other table a check reads (referential integrity's target; a freshness SLA's upstream,
    read unless the run gives a business date), if any."""
    target = spec.arguments.get("references")
    if isinstance(target, str) and target.count(".") == 2:
        return target.rsplit(".", 1)[0]
    if not upstream:
        return None
    parent = spec.arguments.get("upstream")
    return parent if isinstance(parent, str) and parent.count(".") == 1 else None


def _missing_reference(
    result: CheckResult, spec: CheckSpec, missing: set[str], full_name: Any, *, upstream: bool = True
) -> CheckResult | None:
    """The ERROR row of a check whose referenced table does not exist (judging against an empty
    frame would be a verdict on nothing): which table, and which job creates it."""
    parent = referenced_table(spec, upstream=upstream)
    if parent is None or parent not in missing:
        return None
    from retail_lakehouse.pipeline.quality_table_checks import BUILT_BY

    job = BUILT_BY.get(parent.split(".")[0], "the job that writes it")
    full = full_name(parent)
    details = (
        f"{spec.check} cannot judge {result.table_name}: the table it references, {full}, does not exist. "
        f"It is created by job {job}; run it (`lakehouse run {job}`, or retail_daily), then the checks again."
    )
    evidence = {"referenced_table": full, "created_by_job": job, "exists": False,
                "criticality": spec.criticality}  # fmt: skip
    return CheckResult(
        table_name=result.table_name,
        check_name=result.check_name,
        check_type=result.check_type,
        criticality=result.criticality,
        check_status="ERROR",
        metric_value=None,
        threshold=None,
        details=details,
        evidence=json.dumps(evidence, sort_keys=True),
    )


def table_ref(table_name: str) -> str:
    """``retail_datalake.local_silver.orders`` -> ``silver.orders`` (the registry ref)."""
    parts = table_name.split(".")
    if len(parts) == 3:
        return f"{parts[1].split('_', 1)[-1]}.{parts[2]}"
    return table_name


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
    def errors(self) -> list[CheckResult]:
        """Checks that could not judge (ERROR), e.g. of a table that does not exist."""
        return [r for r in self.results if r.check_status == "ERROR"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.check_status == "WARN"]

    @property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.results])

    def overview(self) -> pd.DataFrame:
        """Every check, one line each, for a person to read: ERROR, FAILED and WARN first, then PASSED
        (each in run order); the table as ``layer.table``; no evidence (it is in
        ``monitoring.quality_metrics``). `frame` has every field."""
        import pandas as pd

        order = {"ERROR": 0, "FAILED": 1, "WARN": 2, "PASSED": 3}
        ranked = sorted(enumerate(self.results), key=lambda ir: (order.get(ir[1].check_status, 0), ir[0]))
        columns = ["table", "check", "status", "criticality", "metric", "threshold", "details"]
        return pd.DataFrame(
            [
                (table_ref(r.table_name), r.check_name, r.check_status, r.criticality, r.metric_value,
                 r.threshold, r.details)
                for _, r in ranked
            ],
            columns=columns,
        )

    def summary(self) -> dict[str, int]:
        out = {"PASSED": 0, "WARN": 0, "FAILED": 0, "ERROR": 0}
        for r in self.results:
            out[r.check_status] += 1
        return out

    def raise_for_errors(self) -> None:
        """Raise when an error-criticality check failed or a check could not judge (ERROR).

        Raises:
            CheckFailedError: names each failed / errored check and its details.
        """
        bad = self.errors + self.failed_errors
        if bad:
            lines = [
                f"{r.check_status} {r.table_name}.{r.check_name} ({r.check_type}): {r.details}" for r in bad
            ]
            raise CheckFailedError(
                f"{len(lines)} check(s) failed or could not run in run {self.run_id} (results are in "
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
    from retail_lakehouse import engine
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.engine import writes

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
    missing: set[str] = set()

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
                missing.add(ref)
                cache[ref] = spark.createDataFrame([], tdef.ddl())
        return cache[ref]

    started = dt.datetime.now(dt.UTC)
    report = QualityReport(run_id=run_id, check_timestamp=started)
    memo: dict[Any, Any] = {}
    for ref in refs:
        ctx = CheckContext(ref, read(ref), run_id, as_of, read, full_name, memo)
        if ref in missing:  # its checks would judge an empty frame: no verdict, one ERROR row
            report.results.append(
                missing_table_result(registry().get(ref, settings=settings), full_name(ref))
            )
            continue
        results = evaluate_table(sets[ref], ctx)
        report.results += [
            _missing_reference(r, spec, missing, full_name, upstream=as_of is None)
            or _with_samples(r, spec, ctx)
            for r, spec in zip(results, sets[ref], strict=True)
        ]
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
                r.evidence,
            )
            for r in report.results
        ]
        tdef = registry().get("monitoring.quality_metrics", settings=settings)
        # evolve_schema: a lakehouse created before `evidence` existed gets the column added.
        write_monitoring(tdef.ref, rows, tdef.ddl(), evolve_schema=True, env=settings.env)
    return report
