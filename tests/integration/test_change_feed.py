"""Silver's incremental read: the change feed (Databricks) and the watermark (local) give the same rows,
hence the same silver table.

Locally no table carries a change feed (Sail cannot write one), so the feed's rows are computed from
the Delta log by `incremental.rows_added_between` (the files the commits after a version added, read
with delta-rs): what `readChangeFeed` returns for an append-only table. A real `readChangeFeed` read
is not exercised here.
"""

from __future__ import annotations

import dataclasses

import pytest
from pyspark.sql import functions as F

from retail_lakehouse import engine
from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.tables import CDF_PROPERTY, registry
from retail_lakehouse.engine import writes
from retail_lakehouse.pipeline import incremental, silver

PAYLOAD = ("customer_id bigint, first_name string, last_name string, email string, phone string, address string, "
           "city string, state string, postal_code string, segment string, created_at string, updated_at string")


def _row(cid, updated, segment="regular"):
    return (cid, "ann", "lee", f"a{cid}@x.org", "555", "1 Main St", "york", "ny", "10001", segment,
            "2024-01-01 00:00:00", updated)


def _append(spark, bronze, rows, run_id):
    df = spark.createDataFrame(rows, schema=PAYLOAD).select(
        "*", F.current_timestamp().alias("_ingested_at"), F.lit("store_oltp").alias("_source_system"),
        F.lit(run_id).alias("_run_id"), F.lit(None).cast("string").alias("_source_file"))
    writes.write_table(df, bronze, mode="append", env="local")


def _silver(df, rules, keys):
    """The silver rows and the quarantined keys the pure core makes of a set of new bronze rows."""
    checked = silver.evaluate(silver.standardize(df, rules), rules)
    valid = checked.filter(F.size("__failed_errors") == 0)
    rows = silver.deduplicate(valid, keys, rules.order_by).select(*rules.columns).collect()
    bad = checked.filter(F.size("__failed_errors") > 0).select("__raw.updated_at").collect()
    return sorted((tuple(r) for r in rows), key=repr), sorted(r[0] for r in bad)


@pytest.fixture(scope="module")
def two_batches(isolated_home):
    settings = load_settings("local")
    spark = engine.get_spark("local")
    bronze = registry().get("customers", layer="bronze")
    _append(spark, bronze, [_row(1, "2024-01-01 10:00:00"), _row(2, "2024-01-01 11:00:00"),
                            _row(3, "2024-01-01 12:00:00")], "r1")
    full = bronze.full_name(settings)
    v1 = incremental.current_version(full, "local")
    high = spark.table(full).agg(F.max("_ingested_at")).collect()[0][0]
    _append(spark, bronze, [_row(3, "2024-01-02 09:00:00", "vip"), _row(4, "2024-01-02 10:00:00"),
                            _row(4, "2024-01-02 10:05:00"), _row(5, "2024-01-02 11:00:00"),
                            _row(None, "2024-01-02 12:00:00")], "r2")
    v2 = incremental.current_version(full, "local")
    return settings, spark, bronze, full, v1, v2, high.isoformat(sep=" ")


def test_feed_and_watermark_read_the_same_new_rows(two_batches):
    settings, spark, bronze, full, v1, v2, watermark = two_batches
    assert v2 > v1
    by_wm = incremental.by_watermark(spark.table(full), watermark)
    by_feed = incremental.rows_added_between(spark, bronze, settings, v1, v2)
    cols = [c for c in bronze.columns if c != "_source_file"]
    rows = lambda df: sorted((tuple(r) for r in df.select(*cols).collect()), key=repr)  # noqa: E731
    assert rows(by_wm) == rows(by_feed)
    assert by_wm.count() == 5 and {r[0] for r in by_feed.select("_run_id").collect()} == {"r2"}


def test_feed_and_watermark_give_the_same_silver_table(two_batches):
    settings, spark, bronze, full, v1, v2, watermark = two_batches
    rules, keys = silver.rule_set("customers"), registry().get("customers", layer="silver").keys
    from_wm = _silver(incremental.by_watermark(spark.table(full), watermark), rules, keys)
    from_feed = _silver(incremental.rows_added_between(spark, bronze, settings, v1, v2), rules, keys)
    assert from_wm == from_feed
    rows, quarantined = from_feed
    assert [r[0] for r in rows] == [3, 4, 5] and quarantined == ["2024-01-02 12:00:00"]
    assert next(r for r in rows if r[0] == 3)[9] == "vip"  # the update, not the first batch's row


def test_the_feed_is_on_only_for_databricks_targets(two_batches):
    settings, spark, bronze, *_ = two_batches
    assert bronze.change_data_feed
    assert incremental.read_mode(bronze, settings) == "watermark"
    prod = dataclasses.replace(settings, env="prod")
    assert incremental.read_mode(bronze, prod) == "change_feed"
    assert bronze.create_properties(local=False)[CDF_PROPERTY] == "true"
    assert CDF_PROPERTY not in bronze.create_properties(local=True)
    assert CDF_PROPERTY not in registry().get("customers", layer="silver").create_properties(local=False)
    # Locally the table was created without the feed: its properties say so.
    props = {r[0]: r[1] for r in engine.sql(f"SHOW TBLPROPERTIES {bronze.full_name(settings)}", env="local").collect()}
    assert props.get(CDF_PROPERTY, "false") != "true"
    assert incremental.feed_enabled(bronze.full_name(settings), "local") is False


def test_silver_reads_by_watermark_locally_and_records_no_version(two_batches):
    settings, spark, bronze, full, *_ = two_batches
    rows, version = incremental.new_bronze_rows(spark, bronze, "customers", settings)
    assert version is None and rows.count() == spark.table(full).count()  # no watermark yet: every row
