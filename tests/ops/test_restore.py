"""restore: resolve_version on small frames; the bad_write drill resolved by the notebook."""

from __future__ import annotations

import pandas as pd
import pytest

from retail_lakehouse.core.errors import ConfirmationRequired, ParameterError
from retail_lakehouse.ops import restore
from tests.ops._helpers import audit_rows, run_notebook

HIST = pd.DataFrame({"version": [3, 2, 1, 0], "timestamp": pd.to_datetime(
    ["2024-01-04", "2024-01-03", "2024-01-02", "2024-01-01"], utc=True)})


@pytest.mark.parametrize(("text", "want"), [("2", 2), ("latest-1", 2), ("latest - 3", 0), ("latest", 3),
                                            ("2024-01-02 12:00:00", 1), ("2024-01-03T00:00:00+00:00", 2)])
def test_resolve_version(text, want):
    assert restore.resolve_version(HIST, text) == want


@pytest.mark.parametrize("text", ["7", "latest-9", "2023-12-31", "v2; DROP TABLE x", ""])
def test_resolve_version_rejects(text):
    with pytest.raises(ParameterError, match="version"):
        restore.resolve_version(HIST, text)


def test_apply_in_prod_needs_confirm_before_any_call():
    plan = restore.RestorePlan.__new__(restore.RestorePlan)
    plan.ref = restore.TableRef(None, "retail_datalake.prod_gold.fact_sales", "prod")  # type: ignore[arg-type]
    with pytest.raises(ConfirmationRequired):
        restore.apply(None, plan, dry_run=False, confirm=False)  # type: ignore[arg-type]


def test_bad_write_restored(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    result = drills.run("bad_write")
    facts = result.facts
    assert _local.count("gold.fact_sales") == facts["bad_rows"]
    # dry run first: nothing changes
    text = run_notebook("restore", tmp_path, **{**result.parameters, "dry_run": True})
    assert "DRY RUN" in text and _local.version("gold.fact_sales") == facts["bad_version"]
    # a version that does not exist stops before any change
    with pytest.raises(Exception, match="does not exist"):
        run_notebook("restore", tmp_path, **{**result.parameters, "version": "999"})
    with pytest.raises(Exception, match="is not a table name"):
        run_notebook("restore", tmp_path, **{**result.parameters, "table": "orders; DROP TABLE x"})
    assert _local.version("gold.fact_sales") == facts["bad_version"]
    text = run_notebook("restore", tmp_path, **result.parameters)
    assert f"target version {facts['good_version']}" in text and "gold.agg_daily_sales" in text
    assert "OUTCOME HELD" in text
    summary = text[text.index("===== SUMMARY of restore: HELD ====="):]
    assert "reprocess_downstream True" in summary and f"-p version {facts['good_version']}" in summary
    assert _local.count("gold.fact_sales") == facts["good_rows"]
    audit = audit_rows("restore")
    assert {"DRY_RUN", "SUCCESS"} <= set(audit["outcome"])
    assert any(o.startswith("FAILED") for o in audit["outcome"])
    assert "fact_sales" in audit[audit["outcome"] == "SUCCESS"]["tables_changed"].iloc[-1]
