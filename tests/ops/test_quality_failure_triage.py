"""quality_failure_triage: summaries on small frames; the quality_burst drill triaged by the notebook."""

from __future__ import annotations

import pandas as pd
import pytest

from retail_lakehouse.ops import quality_failure_triage as qft
from tests.ops._helpers import audit_rows, run_notebook


def test_summarize_checks_orders_failures_first():
    t = pd.Timestamp("2024-01-01", tz="UTC")
    m = pd.DataFrame([
        {"check_timestamp": t, "check_name": "a", "check_type": "not_null", "criticality": "error",
         "check_status": "PASSED", "metric_value": 0.0, "threshold": 0.0, "details": ""},
        {"check_timestamp": t, "check_name": "b", "check_type": "quarantine_rate", "criticality": "error",
         "check_status": "FAILED", "metric_value": 1.0, "threshold": 0.05, "details": "x"},
        {"check_timestamp": t + pd.Timedelta(hours=1), "check_name": "b", "check_type": "quarantine_rate",
         "criticality": "error", "check_status": "FAILED", "metric_value": 0.9, "threshold": 0.05, "details": "y"},
    ])
    s = qft.summarize_checks(m)
    assert list(s["check_name"]) == ["b", "a"]
    assert s.iloc[0]["failed_runs"] == 2 and s.iloc[0]["metric_value"] == 0.9


def test_summarize_checks_puts_a_missing_table_error_with_the_failures():
    t = pd.Timestamp("2024-01-01", tz="UTC")
    rows = [("a", "PASSED"), ("b", "WARN"), ("c", "ERROR")]
    m = pd.DataFrame([
        {"check_timestamp": t, "check_name": n, "check_type": "x", "criticality": "error", "check_status": st,
         "metric_value": 0.0, "threshold": 0.0, "details": ""} for n, st in rows
    ])
    assert list(qft.summarize_checks(m)["check_name"]) == ["c", "b", "a"]


def test_failing_rules():
    q = pd.DataFrame({"_failed_rules": ["customer_id_not_null", "customer_id_not_null,customer_exists", None]})
    r = qft.failing_rules(q)
    assert dict(zip(r["rule"], r["rows"], strict=True)) == {"customer_id_not_null": 2, "customer_exists": 1}


def test_quality_burst_triaged(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills

    result = drills.run("quality_burst")
    assert result.facts["quarantined"] >= result.facts["burst"]
    with pytest.raises(Exception, match="date"):
        run_notebook("quality_failure_triage", tmp_path, **{**result.parameters, "date": "2024-13-45"})
    with pytest.raises(Exception, match="confirm"):
        run_notebook("quality_failure_triage", tmp_path,
                     **{**result.parameters, "env": "qa", "action": "rerun", "dry_run": False})
    text = run_notebook("quality_failure_triage", tmp_path, **result.parameters)
    for check in result.facts["failed_checks"]:
        assert check in text
    assert result.facts["rule"] in text and result.facts["run_id"] in text
    text = run_notebook("quality_failure_triage", tmp_path, **{**result.parameters, "action": "rerun"})
    assert "Dry run: would run retail_data_quality_checks" in text
    assert "DRY_RUN" in set(audit_rows("quality_failure_triage")["outcome"])
