"""Schema enforcement: our writes never drop a column silently (Sail 0.7 does)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from retail_lakehouse import engine
from retail_lakehouse.core.errors import SchemaMismatchError, SqlError
from retail_lakehouse.engine import writes

TABLE = "monitoring.ops_audit"


def _audit(spark, ids):
    return spark.createDataFrame(
        [(f"a{i}", "local", "test", "restore", "gold.fact_sales", True, "ok") for i in ids],
        "audit_id string, env string, actor string, operation string, notebook string, dry_run boolean, outcome string",
    )


def _count(full):
    return engine.sql(f"SELECT count(*) FROM {full}").collect()[0][0]


@pytest.mark.parametrize("how", ["append", "overwrite", "merge"])
def test_no_write_path_drops_an_extra_column(spark, how):
    """Every write path either keeps an extra column (evolution) or refuses it; none drops it."""
    table = "gold.dim_product"
    base = spark.createDataFrame([(1, 10, "p")], "product_sk bigint, product_id bigint, sku string")
    writes.write_table(base, table, mode="overwrite")
    extra = spark.createDataFrame([(1, 10, "p", f"v-{how}")], "product_sk bigint, product_id bigint, sku string, x_" + how + " string")
    write = (lambda df, **kw: writes.merge_into(df, table, **kw)) if how == "merge" else (
        lambda df, **kw: writes.write_table(df, table, mode=how, **kw)
    )
    with pytest.raises(SchemaMismatchError):
        write(extra)
    write(extra, evolve_schema=True)
    got = engine.sql(f"SELECT x_{how} FROM retail_datalake.local_gold.dim_product WHERE product_id = 10 AND x_{how} IS NOT NULL").collect()
    assert [r[0] for r in got] == [f"v-{how}"]


def test_extra_column_is_refused_and_nothing_written(spark):
    full = writes.write_table(_audit(spark, [1]), TABLE).table
    before = _count(full)
    with pytest.raises(SchemaMismatchError, match="table lacks: surprise"):
        writes.write_table(_audit(spark, [2]).withColumn("surprise", F.lit("x")), TABLE)
    assert _count(full) == before


def test_schema_evolution_adds_the_column_and_keeps_values(spark):
    df = _audit(spark, [3]).withColumn("ticket", F.lit("INC-42"))
    result = writes.write_table(df, TABLE, evolve_schema=True)
    assert result.added_columns == ("ticket",)
    got = engine.sql(f"SELECT ticket FROM {result.table} WHERE audit_id = 'a3'").collect()
    assert got[0][0] == "INC-42"
    # The next session sees the new column too.
    assert "ticket" in engine.sql(f"SELECT * FROM {result.table}").columns


def test_lossy_type_is_refused(spark):
    df = spark.createDataFrame([("a9", "not-a-bool")], "audit_id string, dry_run string")
    with pytest.raises(SchemaMismatchError, match="dry_run: string -> boolean"):
        writes.write_table(df, TABLE)


def test_missing_columns_are_null_and_widening_is_allowed(spark):
    df = spark.createDataFrame([("r-w", "job", 1)], "run_id string, job_name string, attempt tinyint")
    full = writes.write_table(df, "monitoring.job_runs").table
    row = engine.sql(f"SELECT attempt, state FROM {full} WHERE run_id = 'r-w'").collect()[0]
    assert row[0] == 1 and row[1] is None


def test_replace_where_replaces_only_the_range(spark):
    full = "retail_datalake.local_silver.orders"
    base = spark.createDataFrame(
        [(1, "2024-01-01"), (2, "2024-01-02"), (3, "2024-01-03")], "order_id bigint, d string"
    ).select("order_id", F.to_date("d").alias("order_date"))
    writes.write_table(base, "silver.orders", mode="overwrite")
    new = spark.createDataFrame([(20, "2024-01-02")], "order_id bigint, d string").select(
        "order_id", F.to_date("d").alias("order_date")
    )
    writes.write_table(new, "silver.orders", mode="overwrite", replace_where="order_date = '2024-01-02'")
    ids = sorted(r[0] for r in engine.sql(f"SELECT order_id FROM {full}").collect())
    assert ids == [1, 3, 20]
    outside = spark.createDataFrame([(30, "2024-01-05")], "order_id bigint, d string").select(
        "order_id", F.to_date("d").alias("order_date")
    )
    with pytest.raises(SqlError, match="outside"):
        writes.write_table(outside, "silver.orders", mode="overwrite", replace_where="order_date = '2024-01-02'")
    assert sorted(r[0] for r in engine.sql(f"SELECT order_id FROM {full}").collect()) == [1, 3, 20]


def test_merge_updates_matches_and_inserts_the_rest(spark):
    full = "retail_datalake.local_gold.dim_store"
    first = spark.createDataFrame([(1, 10, "A"), (2, 20, "B")], "store_sk bigint, store_id bigint, store_name string")
    writes.merge_into(first, "gold.dim_store")
    second = spark.createDataFrame([(2, 20, "B2"), (3, 30, "C")], "store_sk bigint, store_id bigint, store_name string")
    writes.merge_into(second, "gold.dim_store")
    got = sorted(tuple(r) for r in engine.sql(f"SELECT store_sk, store_name FROM {full}").collect())
    assert got == [(1, "A"), (2, "B2"), (3, "C")]
    dupes = spark.createDataFrame([(4, 40, "D"), (4, 40, "E")], "store_sk bigint, store_id bigint, store_name string")
    with pytest.raises(SqlError, match="deduplicate"):
        writes.merge_into(dupes, "gold.dim_store")
