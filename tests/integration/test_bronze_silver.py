"""Bronze ingestion and silver cleaning on generated sources: reconciliation, idempotency, bad input."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from retail_lakehouse import engine
from retail_lakehouse.core.errors import ConfigError, ParameterError, SourceError
from retail_lakehouse.pipeline import ingest, silver
from tests.conftest import generate_sources

SILVER_ORDER = ("customers", "products", "stores", "orders", "order_items", "pos_transactions")


def count(table: str, where: str = "TRUE") -> int:
    return engine.sql(f"SELECT count(*) FROM retail_datalake.local_{table} WHERE {where}").collect()[0][0]


def version(table: str) -> int:
    return int(engine.sql(f"DESCRIBE HISTORY retail_datalake.local_{table} LIMIT 1").toPandas()["version"][0])


def load_all(run_id: str) -> dict[str, silver.SilverResult]:
    for source in ingest.OLTP_TABLES:
        ingest.ingest_oltp(source, run_id=run_id)
    ingest.ingest_pos(run_id=run_id, max_files_per_trigger=10)
    return {t: silver.clean_table(t, run_id=run_id) for t in SILVER_ORDER}


@pytest.fixture(scope="module")
def loaded(isolated_home):
    generated = generate_sources(isolated_home, days=3)
    results = load_all("run-1")
    return generated, results


def test_bronze_holds_every_source_row_with_metadata(loaded):
    generated, _ = loaded
    for source in ingest.OLTP_TABLES:
        assert count(f"bronze.{source}") == generated.rows[source]
    assert count("bronze.pos_events") == generated.rows["pos_events"]
    meta = engine.sql(
        "SELECT DISTINCT _source_system, _run_id FROM retail_datalake.local_bronze.orders"
    ).collect()
    assert [tuple(r) for r in meta] == [("store_oltp", "run-1")]
    assert count("bronze.pos_events", "_source_file LIKE '%.jsonl'") == generated.rows["pos_events"]


def test_pos_micro_batches_record_progress(loaded):
    generated, _ = loaded
    progress = engine.sql(
        "SELECT batchId, numInputRows, numFilesOutstanding, processedRowsPerSecond "
        "FROM retail_datalake.local_monitoring.stream_progress ORDER BY batchId"
    ).toPandas()
    assert len(progress) == -(-generated.pos_files // 10)
    assert progress["numInputRows"].sum() == generated.rows["pos_events"]
    assert progress["numFilesOutstanding"].iloc[-1] == 0
    assert list(progress["numFilesOutstanding"]) == sorted(progress["numFilesOutstanding"], reverse=True)


def test_every_run_reconciles(loaded):
    _, results = loaded
    for table, result in results.items():
        assert result.balanced, result.as_dict()
        assert result.bronze_rows > 0, table
    recon = engine.sql(
        "SELECT count(*) FROM retail_datalake.local_monitoring.reconciliation WHERE NOT balanced"
    ).collect()[0][0]
    assert recon == 0


def test_defects_end_where_the_rules_say(loaded):
    generated, results = loaded
    orders, items = results["orders"], results["order_items"]
    defects = generated.defects
    assert orders.quarantined_by_rule.get("customer_id_not_null", 0) == defects.get("orders.null_keys", 0)
    assert orders.quarantined_by_rule.get("order_ts_parseable", 0) == defects.get("orders.unparseable_dates", 0)
    assert orders.quarantined_by_rule.get("store_exists", 0) == defects.get("orders.unknown_references", 0)
    assert items.quarantined_by_rule.get("quantity_positive", 0) >= defects.get("order_items.negative_quantities", 0)
    assert items.quarantined_by_rule.get("product_exists", 0) == defects.get("order_items.unknown_references", 0)
    # Duplicates are repaired (latest kept), not quarantined: silver keys are unique.
    dupes = engine.sql(
        "SELECT count(*) FROM (SELECT order_id FROM retail_datalake.local_silver.orders "
        "GROUP BY order_id HAVING count(*) > 1)"
    ).collect()[0][0]
    assert dupes == 0 and orders.duplicates_removed >= defects.get("orders.duplicate_records", 0)
    reasons = engine.sql(
        "SELECT DISTINCT _failed_rules FROM retail_datalake.local_silver.orders_quarantine"
    ).collect()
    assert {r[0] for r in reasons} <= {"customer_id_not_null", "order_ts_parseable", "store_exists",
                                      "customer_exists", "updated_at_parseable", "order_id_not_null"}


def test_rerun_with_no_new_data_changes_nothing(loaded):
    tables = [f"silver.{t}" for t in SILVER_ORDER] + ["bronze.orders", "bronze.pos_events"]
    before = {t: count(t) for t in tables}
    again = load_all("run-2")
    assert all(r.bronze_rows == 0 for r in again.values())
    assert {t: count(t) for t in tables} == before


def test_a_new_day_is_ingested_incrementally(loaded, isolated_home):
    before = count("bronze.orders")
    generated = generate_sources(isolated_home, days=4)
    results = load_all("run-3")
    assert count("bronze.orders") == generated.rows["orders"]
    assert 0 < results["orders"].bronze_rows == generated.rows["orders"] - before
    assert all(r.balanced for r in results.values())


def test_schema_change_adds_the_column_and_keeps_values(isolated_home):
    from retail_lakehouse.sandbox.generate import DefectRates

    generated = generate_sources(isolated_home, days=5, defects=DefectRates.load(schema_change_day=4))
    result = ingest.ingest_oltp("orders", run_id="run-4")
    assert result.added_columns == ["promo_code"]
    bronze_codes = count("bronze.orders", "promo_code IS NOT NULL")
    assert bronze_codes > 0
    cleaned = silver.clean_table("orders", run_id="run-4")
    assert cleaned.balanced
    assert count("silver.orders", "promo_code IS NOT NULL") > 0
    assert generated.days == 5


def test_unreachable_source_fails_clearly_and_leaves_bronze(isolated_home):
    db = isolated_home / "sources" / "store_oltp.sqlite"
    moved = db.with_suffix(".away")
    shutil.move(db, moved)
    before = version("bronze.customers")
    try:
        with pytest.raises(SourceError, match="unreachable"):
            ingest.ingest_oltp("customers", run_id="run-x")
    finally:
        shutil.move(moved, db)
    assert version("bronze.customers") == before
    ingest.ingest_oltp("customers", run_id="run-x")  # the retry succeeds once the cause is gone


def test_landing_file_that_is_not_json_fails_and_leaves_bronze(isolated_home):
    bad = isolated_home / "landing" / "pos" / "2099-01-01" / "pos_20990101_08.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"event_id": "ok"}\nthis is not json\n')
    before = count("bronze.pos_events")
    with pytest.raises(SourceError, match="line 2 is not JSON"):
        ingest.ingest_pos(run_id="run-bad")
    assert count("bronze.pos_events") == before
    shutil.rmtree(bad.parent)
    ingest.ingest_pos(run_id="run-bad")


def test_backfill_reprocesses_a_range_with_replace_where(loaded):
    day = dt.date(2024, 1, 2)
    before = count("silver.orders", f"order_date = '{day}'")
    result = silver.clean_table("orders", run_id="run-bf", backfill_start_date=day, backfill_end_date=day)
    assert result.mode == "backfill" and result.balanced
    assert count("silver.orders", f"order_date = '{day}'") == before
    with pytest.raises(ParameterError, match="both"):
        silver.clean_table("orders", run_id="x", backfill_start_date=day)
    with pytest.raises(ParameterError, match="before the start"):
        silver.clean_table("orders", run_id="x", backfill_start_date=day, backfill_end_date=dt.date(2024, 1, 1))


def test_rule_sets_are_validated_as_a_whole():
    with pytest.raises(ConfigError) as info:
        silver.parse_rule_set(
            {"table": "t", "source": "bronze.t", "columns": {"a": "a"},
             "rules": [{"name": "x", "criticality": "fatal", "expression": "a > 0"},
                       {"name": "x", "criticality": "error"}]},
            "test",
        )
    text = str(info.value)
    assert "criticality must be" in text and "duplicate rule name" in text and "exactly one of" in text


def test_backfill_dates_on_a_reference_table_run_incrementally(loaded):
    day = dt.date(2024, 1, 2)
    result = silver.clean_table("customers", run_id="run-bf2", backfill_start_date=day, backfill_end_date=day)
    assert result.mode == "incremental" and result.balanced
