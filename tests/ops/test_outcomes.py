"""Ops outcomes raise `ProcedureFailedError` themselves (`raise_for_status()`), with their own message."""

from __future__ import annotations

import pandas as pd
import pytest

from retail_lakehouse.core.errors import LakehouseError, ProcedureFailedError
from retail_lakehouse.ops import (
    backfill,
    data_freshness,
    optimize,
    rebuild_from_source,
    restore,
    schema_evolution,
)
from retail_lakehouse.ops.job_run_triage import RepairOutcome

EMPTY = pd.DataFrame()


def outcomes(held: bool):
    """(outcome, procedure, run id it carries) for every procedure whose notebook raises."""
    return [
        (backfill.BackfillOutcome(False, EMPTY, EMPTY, 11, held=held, message="m"), "backfill", 11),
        (optimize.OptimizeOutcome(False, [], None, None, None, None, held=held, message="m"), "optimize", None),  # type: ignore[arg-type]
        (rebuild_from_source.RebuildOutcome(False, [], None, None, held, "m", run_id=12), "rebuild_from_source", 12),
        (restore.RestoreOutcome(False, "", 1, 2, 0, held, reprocess_run_id=13, message="m"), "restore", 13),
        (schema_evolution.EvolutionOutcome(False, [], held, "m", run_id=14), "schema_evolution", 14),
        (RepairOutcome(15, 1, ["t"], "FAILED" if not held else "SUCCESS", held, "m"), "job_failure_triage", 15),
    ]


@pytest.mark.parametrize("index", range(6))
def test_an_outcome_that_did_not_hold_raises_with_its_message_and_context(index):
    outcome, procedure, run_id = outcomes(held=False)[index]
    with pytest.raises(ProcedureFailedError) as info:
        outcome.raise_for_status()
    assert str(info.value) == "m" and isinstance(info.value, LakehouseError)
    assert (info.value.procedure, info.value.run_id) == (procedure, run_id)
    held, _, _ = outcomes(held=True)[index]
    assert held.raise_for_status() is None


def test_a_dry_run_repair_never_raises():
    dry = RepairOutcome(15, None, ["t"], None, False, "Dry run: would rerun t of run 15.", dry_run=True)
    assert dry.raise_for_status() is None and not dry.failed


def test_stale_tables_fail_the_run_only_when_asked():
    report = pd.DataFrame({"table": ["silver.orders", "silver.pos_transactions"], "status": ["FRESH", "STALE"],
                           "reason": ["within SLA", "the newest business date is 3 days behind"]})
    assert data_freshness.FreshnessOutcome(report).raise_for_status() is None
    outcome = data_freshness.FreshnessOutcome(report, fail_on_stale=True)
    assert outcome.verdict() == ["STALE: 1 table(s) miss their SLA:",
                                 "  silver.pos_transactions: STALE: the newest business date is 3 days behind"]
    with pytest.raises(ProcedureFailedError, match=r"^stale tables: \['silver.pos_transactions'\]$") as info:
        outcome.raise_for_status()
    assert info.value.procedure == "data_freshness"
    fresh = data_freshness.FreshnessOutcome(report.iloc[:1], fail_on_stale=True)
    assert fresh.verdict() == ["FRESH: all 1 tables meet their SLA"] and fresh.raise_for_status() is None
