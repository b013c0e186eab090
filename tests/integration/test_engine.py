"""engine.sql on tables with several versions: every Delta utility statement, routing and bad input."""

from __future__ import annotations

import pytest

from retail_lakehouse import engine, writes
from retail_lakehouse.errors import RetentionTooShortError, SqlError, TableNotFoundError, VersionNotFoundError

T = "retail_datalake.local_gold.engine_demo"


@pytest.fixture(scope="module")
def versioned():
    """A managed table with 4 versions: create, 2 inserts, a delete."""
    engine.sql(f"DROP TABLE IF EXISTS {T}")
    engine.sql(f"CREATE TABLE {T} (id BIGINT, region STRING, amount DOUBLE) USING delta PARTITIONED BY (region)")
    engine.sql(f"INSERT INTO {T} VALUES (1, 'north', 10.0), (2, 'south', 20.0)")
    engine.sql(f"INSERT INTO {T} VALUES (3, 'north', 30.0), (4, 'east', 40.0)")
    engine.sql(f"DELETE FROM {T} WHERE id = 1")
    yield T
    engine.sql(f"DROP TABLE IF EXISTS {T}")


def rows(df):
    return [tuple(r) for r in df.collect()]


def test_managed_create_lands_under_the_warehouse(versioned, lakehouse_home):
    path = lakehouse_home / "warehouse" / "retail_datalake" / "local_gold" / "engine_demo"
    assert (path / "_delta_log").is_dir()
    assert engine.local_tables()[T] == path


def test_new_session_sees_tables_by_three_part_name(versioned):
    from pyspark.sql import SparkSession

    fresh = SparkSession.builder.remote(engine._server_url).create()
    engine.register_tables(fresh)
    assert fresh.sql(f"SELECT count(*) FROM {T}").collect()[0][0] == 3


def test_describe_history(versioned):
    hist = engine.sql(f"DESCRIBE HISTORY {versioned}").toPandas()
    assert list(hist["version"]) == [3, 2, 1, 0]
    assert {"version", "timestamp", "operation", "operationParameters", "operationMetrics"} <= set(hist.columns)
    limited = engine.sql(f"DESCRIBE HISTORY {versioned} LIMIT 2").toPandas()
    assert list(limited["version"]) == [3, 2]


def test_describe_detail(versioned):
    detail = engine.sql(f"DESCRIBE DETAIL {versioned}").toPandas().iloc[0]
    assert detail["format"] == "delta"
    assert list(detail["partitionColumns"]) == ["region"]
    assert detail["numFiles"] >= 3


def test_time_travel_and_restore(versioned):
    assert engine.sql(f"SELECT count(*) FROM {versioned} VERSION AS OF 1").collect()[0][0] == 2
    out = engine.sql(f"RESTORE TABLE {versioned} TO VERSION AS OF 2").toPandas()
    assert "num_restored_files" in out.columns
    assert sorted(r[0] for r in rows(engine.sql(f"SELECT id FROM {versioned}"))) == [1, 2, 3, 4]
    with pytest.raises(VersionNotFoundError, match="versions 0..4"):
        engine.sql(f"RESTORE TABLE {versioned} TO VERSION AS OF 99")
    assert engine.sql(f"DESCRIBE HISTORY {versioned} LIMIT 1").toPandas()["version"][0] == 4


def test_optimize_zorder_and_vacuum_guard(versioned):
    before = engine.sql(f"DESCRIBE DETAIL {versioned}").toPandas()["numFiles"][0]
    engine.sql(f"INSERT INTO {versioned} VALUES (5, 'north', 50.0)")
    engine.sql(f"OPTIMIZE {versioned} WHERE region = 'north' ZORDER BY (id)")
    after = engine.sql(f"DESCRIBE DETAIL {versioned}").toPandas()["numFiles"][0]
    assert after <= before
    with pytest.raises(RetentionTooShortError, match="168"):
        engine.sql(f"VACUUM {versioned} RETAIN 1 HOURS")
    dry = engine.sql(f"VACUUM {versioned} RETAIN 168 HOURS DRY RUN").toPandas()
    assert list(dry.columns) == ["path"]


def test_tblproperties_round_trip(versioned):
    engine.sql(f"ALTER TABLE {versioned} SET TBLPROPERTIES ('quality' = 'gold', 'owner_team' = 'retail')")
    props = dict(rows(engine.sql(f"SHOW TBLPROPERTIES {versioned}")))
    assert props["quality"] == "gold" and props["owner_team"] == "retail"


def test_named_parameters_in_both_paths(versioned):
    n = engine.sql("SELECT count(*) FROM IDENTIFIER(:t) WHERE amount > :min", {"t": versioned, "min": 15}).collect()
    assert n[0][0] >= 2
    hist = engine.sql("DESCRIBE HISTORY IDENTIFIER(:t) LIMIT :n", {"t": versioned, "n": 1}).toPandas()
    assert len(hist) == 1


def test_bad_input_is_clear_and_changes_nothing(versioned):
    version = engine.sql(f"DESCRIBE HISTORY {versioned} LIMIT 1").toPandas()["version"][0]
    with pytest.raises(SqlError, match="in statement"):
        engine.sql("SELEC 1")
    with pytest.raises(TableNotFoundError):
        engine.sql("DESCRIBE HISTORY retail_datalake.local_gold.no_such_table")
    with pytest.raises(SqlError):
        engine.sql("SELECT * FROM IDENTIFIER(:t)", {"t": "x; DROP TABLE y"})
    assert engine.sql(f"DESCRIBE HISTORY {versioned} LIMIT 1").toPandas()["version"][0] == version


def test_registry_tables_are_created_with_partitioning_and_properties():
    full = writes.ensure_table("silver.orders")
    detail = engine.sql(f"DESCRIBE DETAIL {full}").toPandas().iloc[0]
    assert list(detail["partitionColumns"]) == ["order_date"]
    assert detail["properties"]["quality"] == "silver"
    assert detail["properties"]["delta.deletedFileRetentionDuration"] == "interval 7 days"


def test_named_parameters_in_commands(versioned):
    engine.sql(
        "INSERT INTO IDENTIFIER(:t) VALUES (:id, :region, :amount)",
        {"t": versioned, "id": 77, "region": "it's west", "amount": 7.5},
    )
    got = engine.sql("SELECT region, amount FROM IDENTIFIER(:t) WHERE id = :id", {"t": versioned, "id": 77}).collect()
    assert [tuple(r) for r in got] == [("it's west", 7.5)]


def test_alter_table_add_columns(versioned):
    engine.sql(f"ALTER TABLE {versioned} ADD COLUMNS (channel STRING, margin DECIMAL(12, 2))")
    assert {"channel", "margin"} <= set(engine.sql(f"SELECT * FROM {versioned}").columns)
    engine.sql(f"INSERT INTO {versioned} SELECT 88, 'north', 1.0, 'web', 2.50")
    got = engine.sql(f"SELECT channel, margin FROM {versioned} WHERE id = 88").collect()
    assert got[0][0] == "web" and float(got[0][1]) == 2.5
    with pytest.raises(SqlError, match="already exists"):
        engine.sql(f"ALTER TABLE {versioned} ADD COLUMNS (channel STRING)")
