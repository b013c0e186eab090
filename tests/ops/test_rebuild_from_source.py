"""rebuild_from_source: statements and refusals on registry entries; the deleted_table drill rebuilt by the notebook."""

from __future__ import annotations

import pytest

from retail_lakehouse.core.errors import ConfirmationRequired, ParameterError
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import rebuild_from_source as rebuild
from tests.ops._helpers import audit_rows, run_notebook


def test_create_statement_has_registry_partitioning_and_properties():
    tdef = registry().get("gold.fact_sales")
    sql = rebuild.create_statement(tdef, "c.s.fact_sales")
    assert sql.startswith("CREATE TABLE IF NOT EXISTS c.s.fact_sales (`order_item_id` bigint")
    assert "PARTITIONED BY (date_key)" in sql and "TBLPROPERTIES (" in sql and "'quality' = 'gold'" in sql


@pytest.mark.parametrize(("ref", "want"), [("bronze.orders", {"pipeline": "bronze", "source": "store_oltp.orders"}),
                                           ("silver.orders", {"pipeline": "silver", "source": "orders"}),
                                           ("gold.fact_sales", {"pipeline": "gold.fact_sales"})])
def test_watermark_filter(ref, want):
    assert rebuild.watermark_filter(registry().get(ref)) == want


@pytest.mark.parametrize("ref", ["bronze.pos_events", "silver.orders_quarantine", "monitoring.watermarks"])
def test_watermark_filter_refuses_tables_the_job_does_not_build(ref):
    with pytest.raises(ParameterError, match="is not rebuilt by"):
        rebuild.watermark_filter(registry().get(ref))


def test_apply_in_prod_needs_confirm_before_any_call():
    plan = rebuild.RebuildPlan.__new__(rebuild.RebuildPlan)
    plan.ref = rebuild.TableRef(None, "retail_datalake.prod_gold.fact_sales", "prod")  # type: ignore[arg-type]
    with pytest.raises(ConfirmationRequired):
        rebuild.apply(None, plan, dry_run=False, confirm=False)  # type: ignore[arg-type]


def test_deleted_table_rebuilt(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    agg_rows = _local.count("gold.agg_daily_sales")
    result = drills.run("deleted_table")
    facts = result.facts
    assert facts["folder_deleted"]
    # dry run first: it finds the loss and changes nothing
    text = run_notebook("rebuild_from_source", tmp_path, **{**result.parameters, "dry_run": True})
    assert "is missing" in text and "DRY RUN" in text and "CREATE TABLE IF NOT EXISTS" in text
    with pytest.raises(Exception, match="is not a table name"):
        run_notebook("rebuild_from_source", tmp_path, **{**result.parameters, "table": "orders; DROP TABLE x"})
    with pytest.raises(Exception, match="is not rebuilt by"):
        run_notebook("rebuild_from_source", tmp_path, **{**result.parameters, "table": "bronze.pos_events"})
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings

    assert not (engine.table_dir(_local.full("gold.fact_sales"), load_settings("local")) / "_delta_log").exists()
    text = run_notebook("rebuild_from_source", tmp_path, **result.parameters)
    assert "OUTCOME HELD" in text and f"{facts['rows_before']} rows, equal to upstream" in text
    assert _local.count("gold.fact_sales") == facts["rows_before"]
    assert _local.count("gold.agg_daily_sales") == agg_rows
    audit = audit_rows("rebuild_from_source")
    assert list(audit["outcome"]) == ["DRY_RUN", "SUCCESS"]  # bad parameters stopped before the audited run
    changed = audit[audit["outcome"] == "SUCCESS"]["tables_changed"].iloc[-1]
    assert "fact_sales" in changed and "watermarks" in changed


def test_job_for_bronze_is_the_ingestion():
    assert rebuild.job_for(registry().get("bronze.stores")) == "retail_ingestion"
    assert rebuild.job_for(registry().get("gold.fact_sales")) == "retail_transformation"


def test_lost_bronze_table_re_ingested_from_the_source(demo_lakehouse, tmp_path):
    """bronze.stores dropped: recreated, its bronze watermark reset, re-read from the store database."""
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    result = drills.run("lost_bronze_table")
    assert result.facts["folder_deleted"]
    text = run_notebook("rebuild_from_source", tmp_path, **result.parameters)
    assert "===== SUMMARY of rebuild_from_source: HELD =====" in text and "retail_ingestion" in text
    assert _local.table("bronze.stores").select("store_id").distinct().count() == result.facts["keys_before"]
