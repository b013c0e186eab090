"""job_failure_triage: classifiers on small texts; the failed_job drill triaged and repaired by the notebook."""

from __future__ import annotations

import pytest

from retail_lakehouse.errors import ParameterError
from retail_lakehouse.ops import job_failure_triage as jft
from tests.ops._helpers import audit_rows, run_notebook


@pytest.mark.parametrize(
    ("error", "category"),
    [
        ("MemoryError: \n  rows = df.collect()", "out_of_memory"),
        ("java.lang.OutOfMemoryError: Java heap space", "out_of_memory"),
        ("SchemaMismatchError: write to x rejected: the DataFrame has column(s) the table lacks", "schema_mismatch"),
        ("SourceError: source store_oltp is unreachable: no SQLite database at /x", "source_unreachable"),
        ("CheckFailedError: 2 error checks failed: silver.orders.quarantine_rate", "data_quality"),
        ("ZeroDivisionError: division by zero", "other"),
        (None, "other"),
    ],
)
def test_classify(error, category):
    c = jft.classify(error)
    assert c.category == category
    assert c.next_step
    if category != "other":
        assert c.evidence


def test_classifiers_registry_is_ordered_and_pluggable():
    assert list(jft.CLASSIFIERS)[:4] == ["out_of_memory", "schema_mismatch", "source_unreachable", "data_quality"]


@pytest.mark.parametrize(("job", "run_id"), [("", "12; DROP TABLE x"), ("retail'; --", ""), ("", "abc")])
def test_bad_target_is_refused(job, run_id):
    with pytest.raises(ParameterError):
        jft.target(job, run_id)


def test_target():
    assert jft.target("retail_ingestion", "") == "retail_ingestion"
    assert jft.target("", "123") == "123"
    assert jft.target("x", "manual") == "x"


def test_failed_job_triaged_and_repaired(demo_lakehouse, tmp_path):
    from retail_lakehouse import drills
    from retail_lakehouse.workspace import connect

    result = drills.run("failed_job")
    assert result.facts["state"] == "FAILED" and result.facts["failed_tasks"]
    # Triage as the library sees it.
    t = jft.triage(connect("local"), str(result.facts["run_id"]))
    assert t.category == "source_unreachable"
    assert set(t.failed_tasks) == set(result.facts["failed_tasks"])
    # Bad parameters stop the notebook before any change.
    with pytest.raises(Exception, match="action"):
        run_notebook("job_failure_triage", tmp_path, **{**result.parameters, "action": "rerun-everything"})
    with pytest.raises(Exception, match="confirm"):
        run_notebook("job_failure_triage", tmp_path, **{**result.parameters, "env": "prod", "dry_run": False})
    # The engineer's run: triage and retry.
    text = run_notebook("job_failure_triage", tmp_path, **{**result.parameters, "dry_run": False})
    assert "DIAGNOSIS (source_unreachable)" in text
    assert "the fix held" in text
    t = jft.triage(connect("local"), str(result.facts["run_id"]))
    assert t.result_state == "SUCCESS" and not t.failed
    rows = audit_rows("job_failure_triage")
    assert "SUCCESS" in set(rows["outcome"])
