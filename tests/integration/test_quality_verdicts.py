"""Verdicts that mean something (issue 14): the quality job on a lakehouse never loaded is an ERROR,
on a freshly generated + loaded one it is green, and each drill fires its check.

One lakehouse for the module: generated sources, the quality job before any load, `retail_daily`,
then the quality job again; each drill breaks it, its check fires, the tables are restored (RESTORE
TABLE ... TO VERSION AS OF) and the checks are green again.
"""

from __future__ import annotations

import json

import pytest

from retail_lakehouse import engine
from retail_lakehouse.jobs.runner import run_job
from retail_lakehouse.pipeline.quality import run_checks
from tests.conftest import generate_sources

METRICS = "retail_datalake.local_monitoring.quality_metrics"
# drill -> (the check it must fire, the tables it fires on)
DRILLS = {
    "empty_source_day": ("has_rows", ["silver.stores"]),
    "late_table": ("sla_freshness", ["gold.fact_sales", "gold.agg_daily_sales"]),
    "volume_drop": ("volume", ["silver.pos_transactions"]),
    "dropped_column": ("schema_drift", ["silver.customers"]),
}


def full(ref: str) -> str:
    layer, name = ref.split(".")
    return f"retail_datalake.local_{layer}.{name}"


def metrics(run_id: str) -> list:
    """The quality rows of a job run (a chained job's run id is ``<parent run id>.<task_key>``)."""
    return engine.sql(
        f"SELECT table_name, check_name, check_type, check_status, details, evidence FROM {METRICS} "
        f"WHERE run_id = '{run_id}' OR run_id LIKE '{run_id}.%'"
    ).collect()


@pytest.fixture(scope="module")
def sources(isolated_home):
    generate_sources(isolated_home, days=5, scale_factor=0.05)
    return isolated_home


@pytest.fixture(scope="module")
def never_loaded(sources):
    """The quality job run right after `lakehouse generate`: no silver or gold table exists yet."""
    return run_job("retail_data_quality_checks", env="local")


@pytest.fixture(scope="module")
def loaded(never_loaded):
    run = run_job("retail_daily", env="local")
    assert run.state == "SUCCESS", run.to_dict()
    return run


@pytest.fixture(scope="module")
def healthy(loaded):
    """The quality job on the freshly loaded lakehouse."""
    return run_job("retail_data_quality_checks", env="local")


def test_checks_of_tables_that_do_not_exist_are_errors_naming_the_job(never_loaded):
    assert never_loaded.state == "FAILED"
    rows = metrics(never_loaded.run_id)
    assert rows and {r.check_status for r in rows} == {"ERROR"}, [tuple(r) for r in rows]
    assert {r.check_name for r in rows} == {"table_exists"}
    by_table = {r.table_name: r for r in rows}
    assert {full("silver.orders"), full("gold.fact_sales"), full("gold.dim_date")} <= set(by_table)
    orders = by_table[full("silver.orders")]
    assert "does not exist" in orders.details and "retail_transformation" in orders.details
    assert json.loads(orders.evidence)["created_by_job"] == "retail_transformation"


def test_quality_job_is_green_on_a_freshly_loaded_lakehouse(healthy):
    assert healthy.state == "SUCCESS", healthy.to_dict()
    rows = metrics(healthy.run_id)
    bad = [tuple(r)[:5] for r in rows if r.check_status in ("FAILED", "ERROR")]
    assert bad == []
    assert all(r.evidence and json.loads(r.evidence) for r in rows)
    kinds = {r.check_type for r in rows if r.check_status == "PASSED"}
    assert {"row_count", "sla_freshness", "volume", "schema_drift"} <= kinds
    volume = [r for r in rows if r.check_name == "volume" and r.table_name == full("silver.orders")][0]
    assert len(json.loads(volume.evidence)["trailing_rows_by_day"]) >= 2  # compared, not skipped


def test_the_daily_job_stays_green_with_the_new_checks(loaded):
    rows = metrics(loaded.run_id)
    assert rows and not [tuple(r)[:5] for r in rows if r.check_status in ("FAILED", "ERROR")]


def _statuses(report, check: str) -> dict[str, str]:
    return {r.table_name: r.check_status for r in report.results if r.check_name == check}


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill_check_is_green_on_the_healthy_lakehouse(healthy, name):
    check, tables = DRILLS[name]
    rows = metrics(healthy.run_id)
    statuses = {r.table_name: r.check_status for r in rows if r.check_name == check}
    assert {statuses[full(t)] for t in tables} == {"PASSED"}, statuses


def _restore(facts: dict) -> None:
    versions = facts.get("versions_before") or {facts["table"]: facts["version_before"]}
    for ref, version in versions.items():
        engine.sql(f"RESTORE TABLE {full(ref)} TO VERSION AS OF {version}", env="local").collect()


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill_fires_its_check(healthy, name):
    from retail_lakehouse.sandbox import drills

    check, tables = DRILLS[name]
    result = drills.run(name)
    try:
        report = run_checks(run_id=f"drill_{name}", env="local")
        statuses = _statuses(report, check)
        assert {statuses[full(t)] for t in tables} == {"FAILED"}, statuses
        fired = [r for r in report.results if r.check_name == check and r.table_name == full(tables[0])][0]
        evidence = json.loads(fired.evidence)
        if name == "late_table":
            assert "h late" in fired.details and evidence["late_hours"] > 0
        if name == "volume_drop":
            assert evidence["rows"] == result.facts["rows_after"] and evidence["median"] > evidence["rows"]
        if name == "dropped_column":
            assert evidence["vs_registry"]["removed"] == ["phone"]
            assert evidence["since_last_run"]["removed"] == ["phone"]  # vs the healthy run's schema
        if name == "empty_source_day":
            assert evidence["rows"] == 0
    finally:
        _restore(result.facts)
    after = run_checks(run_id=f"restored_{name}", env="local")
    assert not after.failed_errors and not after.errors, after.frame.to_string()


def test_alert_incident_drill_alert_arrives_is_suppressed_then_resolved(healthy, tmp_path):
    """The incident drill on the loaded lakehouse: the alert reaches the local receivers with its runbook
    link and triage command, a repeat is counted, the fix resolves it; alerts_review shows what arrived."""
    from retail_lakehouse.alerts import store
    from retail_lakehouse.ops.alerts_review import received
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import alert_incident
    from tests.ops._helpers import run_notebook

    result = drills.run("alert_incident")
    try:
        facts = result.facts
        assert (facts["sent"], facts["status"], facts["repeat"], facts["resolved"]) == (
            "sent",
            "DELIVERED",
            "suppressed",
            "resolved",
        ), facts
        assert "has_rows FAILED" in facts["failed_checks"]
        got = received("quality:silver.stores")
        kinds = [
            (r["kind"], "RESOLVED" in json.dumps(r) or r.get("body", {}).get("event") == "resolve")
            for r in got
        ]
        assert sorted(kinds) == sorted([("slack", False), ("email", False), ("webhook", False),
                                        ("slack", True), ("email", True), ("webhook", True)]), kinds  # fmt: skip
        hook = next(r["body"] for r in got if r["kind"] == "webhook")
        assert hook["runbook"] == "book/failure_handling.md#quality-failures"
        assert "-p table silver.stores" in hook["command"]
        # newest first: the quality job before the first load alerted (table missing) and its success resolved
        rows = [r for r in store.recent("local", 200) if r["alert_key"] == "quality:silver.stores"]
        assert all(r["resolved_at"] is not None for r in rows) and len(rows) == 2, rows
        row = rows[0]
        assert row["suppressed_count"] == 1 and row["resolved_at"] is not None
        # the lakehouse is as it was
        assert (
            engine.sql(f"SELECT count(*) FROM {full('silver.stores')}").collect()[0][0]
            == facts["rows_before"]
        )

        text = run_notebook("alerts_review", tmp_path, **result.parameters)
        assert "quality:silver.stores" in text and "----- slack" in text and "----- email" in text
        assert "SUMMARY of alerts_review" in text
    finally:
        for r in alert_incident._RECEIVERS:
            r.stop()
        alert_incident._RECEIVERS.clear()
