"""optimize: parameter guards; the small_files drill compacted by the notebook."""

from __future__ import annotations

import pytest

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import optimize
from tests.ops._helpers import audit_rows, run_notebook

FACT = registry().get("gold.fact_sales")


def test_where_accepts_partition_comparisons():
    assert optimize.parse_where("date_key >= 20240101 AND date_key < 20240105", ["date_key"]) == [
        "date_key >= 20240101", "date_key < 20240105"]
    assert optimize.parse_where("", ["date_key"]) == []


@pytest.mark.parametrize("where", ["store_sk = 1", "date_key = 1 OR 1 = 1", "date_key = 1; DROP TABLE x",
                                   "date_key IN (1, 2)"])
def test_where_rejects(where):
    with pytest.raises(ParameterError, match="where"):
        optimize.parse_where(where, ["date_key"])


def test_zorder_and_retention_guards():
    assert optimize.check_zorder(["store_sk"], FACT) == ["store_sk"]
    for bad in (["date_key"], ["nope"]):
        with pytest.raises(ParameterError, match="zorder_by"):
            optimize.check_zorder(bad, FACT)
    with pytest.raises(ParameterError, match="168"):
        optimize.check_retention(24)


def test_prod_needs_confirm_before_any_call():
    from retail_lakehouse.core.errors import ConfirmationRequired

    with pytest.raises(ConfirmationRequired):
        optimize.run(None, FACT, env="prod", preds=[], zorder=[], vacuum=False, retention_hours=168,  # type: ignore[arg-type]
                     dry_run=False, confirm=False)


def test_small_files_optimized(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    result = drills.run("small_files")
    assert result.facts["files"] >= 100
    text = run_notebook("optimize", tmp_path, **{**result.parameters, "dry_run": True})
    assert "DRY RUN" in text and _local.version("gold.fact_sales") == result.facts["version"]
    with pytest.raises(Exception, match="168"):
        run_notebook("optimize", tmp_path, **{**result.parameters, "vacuum": True, "retention_hours": 1})
    text = run_notebook("optimize", tmp_path, **{**result.parameters, "vacuum": True})
    assert "OUTCOME HELD" in text
    assert _local.count("gold.fact_sales") == result.facts["rows"]
    from deltalake import DeltaTable

    from retail_lakehouse import engine

    files = len(DeltaTable(str(engine.table_dir(_local.full("gold.fact_sales")))).file_uris())
    assert files < result.facts["files"] / 10
    assert {"DRY_RUN", "SUCCESS"} <= set(audit_rows("optimize")["outcome"])
