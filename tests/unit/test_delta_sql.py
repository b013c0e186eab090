"""Delta utility statements served by delta-rs: parsing, binding and every statement on tiny tables."""

from __future__ import annotations

import datetime as dt
import os
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from retail_lakehouse.core.errors import (
    RetentionTooShortError,
    SqlError,
    TableNotFoundError,
    UnsupportedLocallyError,
    VersionNotFoundError,
)
from retail_lakehouse.engine.delta_sql import (
    DeltaSqlOptions,
    bind_parameters,
    execute,
    is_delta_utility,
    refuse_unsupported,
)

NO_CHECK = DeltaSqlOptions(retention_check=False)


def _frame(ids: list[int], region: str | list[str] = "north") -> pd.DataFrame:
    regions = region if isinstance(region, list) else [region] * len(ids)
    return pd.DataFrame({"id": ids, "amount": [float(i) * 1.5 for i in ids], "region": regions})


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, Path]:
    """orders: v0 create, v1 append, v2 overwrite. sales: partitioned by region, 6 small files."""
    orders = tmp_path / "orders"
    write_deltalake(orders, _frame([1, 2]))
    write_deltalake(orders, _frame([3]), mode="append")
    write_deltalake(orders, _frame([10, 11, 12]), mode="overwrite")
    sales = tmp_path / "sales"
    for i in range(3):
        write_deltalake(sales, _frame([i * 10 + 1, i * 10 + 2], ["north", "south"]), mode="append",
                        partition_by=["region"])
    return {"retail_datalake.local_silver.orders": orders, "retail_datalake.local_gold.sales": sales}


@pytest.fixture
def resolve(tables: dict[str, Path]):
    def _resolve(name: str) -> Path:
        for full, path in tables.items():
            if name in (full, full.split(".", 1)[1], full.rsplit(".", 1)[1]):
                return path
        raise TableNotFoundError(name, f"unknown table {name}")

    return _resolve


def _ids(path: Path) -> list[int]:
    return sorted(DeltaTable(str(path)).to_pandas()["id"].tolist())


def _files_on_disk(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*.parquet") if "_delta_log" not in p.parts}


# --- classification and binding --------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "DESCRIBE HISTORY orders", "desc history orders limit 1", "  -- note\n/* c */ DESCRIBE DETAIL orders",
    "OPTIMIZE sales ZORDER BY (id)", "vacuum orders", "RESTORE TABLE orders TO VERSION AS OF 1",
    "RESTORE orders VERSION AS OF 1", "SHOW TBLPROPERTIES orders", "DESCRIBE HISTORY",
    "ALTER TABLE a.b.c SET TBLPROPERTIES ('k' = 'v')", "ALTER TABLE `a b`.c UNSET TBLPROPERTIES ('k')",
    "ALTER TABLE IDENTIFIER(:t) SET TBLPROPERTIES ('k' = 'v')",
])
def test_is_delta_utility_true(statement: str) -> None:
    assert is_delta_utility(statement)


@pytest.mark.parametrize("statement", [
    "SELECT * FROM orders", "DESCRIBE TABLE orders",
    "SELECT 'VACUUM orders'", "-- VACUUM orders\nSELECT 1", "SELECT a::int, 'unterminated", "",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET *",
])
def test_is_delta_utility_false(statement: str) -> None:
    assert not is_delta_utility(statement)


def test_bind_literals() -> None:
    sql = ("SELECT :s, :i, :f, :d, :b, :n, :ts, :day, ':s', `:s`, x::int, raw:field -- :s\n"
           "FROM IDENTIFIER(:t)")
    bound = bind_parameters(sql, {
        "s": "it's", "i": 42, "f": 1.5, "d": Decimal("2.50"), "b": True, "n": None,
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5), "day": dt.date(2024, 1, 2), "t": "cat.`my schema`.orders",
        "unused": 1,
    })
    assert bound == ("SELECT 'it\\'s', 42, 1.5, 2.50, TRUE, NULL, TIMESTAMP '2024-01-02 03:04:05', "
                     "DATE '2024-01-02', ':s', `:s`, x::int, raw:field -- :s\nFROM cat.`my schema`.orders")


def test_bind_injection_stays_quoted() -> None:
    bound = bind_parameters("SHOW TBLPROPERTIES orders (:k)", {"k": "x'; DROP TABLE y"})
    assert bound == "SHOW TBLPROPERTIES orders ('x\\'; DROP TABLE y')"
    assert bind_parameters("SELECT :k", {"k": "a\\'; DROP"}) == "SELECT 'a\\\\\\'; DROP'"


@pytest.mark.parametrize("value", ["x; DROP TABLE y", "a.b c", "a..b", "1abc", "", "a.`b", 3])
def test_bind_identifier_rejects(value: object) -> None:
    with pytest.raises(SqlError, match="IDENTIFIER"):
        bind_parameters("DESCRIBE HISTORY IDENTIFIER(:t)", {"t": value})


def test_bind_missing_parameter_named() -> None:
    with pytest.raises(SqlError, match=":limit"):
        bind_parameters("DESCRIBE HISTORY t LIMIT :limit", {"t": "x"})
    with pytest.raises(SqlError, match=":t"):
        bind_parameters("DESCRIBE HISTORY IDENTIFIER(:t)", None)


@pytest.mark.parametrize("statement, fragment", [
    ("DESCRIBE HISTORY", "DESCRIBE HISTORY table_name"),
    ("DESCRIBE HISTORY orders LIMIT x", "LIMIT"),
    ("VACUUM orders RETAIN abc HOURS", "RETAIN n HOURS"),
    ("VACUUM orders RETAIN 200", "expected HOURS"),
    ("OPTIMIZE sales ZORDER BY ()", "ZORDER BY"),
    ("OPTIMIZE sales WHERE region LIKE 'n%'", "unsupported operator"),
    ("RESTORE orders", "VERSION AS OF"),
    ("RESTORE orders TO VERSION AS OF 'one'", "version number"),
    ("SHOW TBLPROPERTIES orders ('a'", "expected ')'"),
    ("ALTER TABLE orders SET TBLPROPERTIES ()", "property key"),
    ("DESCRIBE DETAIL orders extra", "unexpected"),
])
def test_malformed_statements(statement: str, fragment: str, resolve) -> None:
    with pytest.raises(SqlError) as info:
        execute(statement, None, resolve)
    assert fragment in str(info.value)
    assert repr(statement) in str(info.value) or statement in str(info.value)


def test_unknown_table(resolve, tmp_path: Path) -> None:
    with pytest.raises(TableNotFoundError):
        execute("DESCRIBE HISTORY nope", None, resolve)
    with pytest.raises(TableNotFoundError, match="no Delta table"):
        execute(f"DESCRIBE DETAIL delta.`{tmp_path / 'empty'}`", None, resolve)


# --- DESCRIBE ------------------------------------------------------------------------------------


def test_describe_history(resolve) -> None:
    hist = execute("DESCRIBE HISTORY IDENTIFIER(:t)", {"t": "retail_datalake.local_silver.orders"}, resolve)
    assert hist["version"].tolist() == [2, 1, 0]
    assert hist["operation"].tolist() == ["WRITE", "WRITE", "WRITE"]  # delta-rs logs a create as WRITE
    assert hist.loc[0, "operationParameters"]["mode"] == "Overwrite"
    assert hist.loc[1, "operationParameters"]["mode"] == "Append"
    assert hist.loc[0, "operationMetrics"]["num_added_rows"] == "3"
    assert all(isinstance(v, str) for v in hist.loc[0, "operationMetrics"].values())
    assert str(hist["timestamp"].dt.tz) == "UTC"
    assert (pd.Timestamp.now(tz="UTC") - hist.loc[0, "timestamp"]) < pd.Timedelta(minutes=5)
    assert hist["engineInfo"].str.startswith("delta-rs").all()
    assert hist["userName"].isna().all()
    assert list(hist.columns)[:5] == ["version", "timestamp", "userId", "userName", "operation"]
    assert execute("DESCRIBE HISTORY orders LIMIT :n", {"n": 1}, resolve)["version"].tolist() == [2]


def test_describe_detail(resolve, tables) -> None:
    sales = tables["retail_datalake.local_gold.sales"]
    detail = execute("DESCRIBE DETAIL local_gold.sales", None, resolve)
    assert len(detail) == 1
    row = detail.iloc[0]
    files = _files_on_disk(sales)
    assert row["format"] == "delta" and row["name"] == "local_gold.sales"
    assert row["numFiles"] == len(files) == 6
    assert row["sizeInBytes"] == sum(os.path.getsize(f) for f in files)
    assert row["partitionColumns"] == ["region"] and row["clusteringColumns"] == []
    assert row["location"] == str(sales.resolve())
    assert row["minReaderVersion"] >= 1 and row["minWriterVersion"] >= 2
    assert isinstance(row["tableFeatures"], list) and isinstance(row["properties"], dict)
    assert row["lastModified"] >= row["createdAt"]
    by_path = execute(f"DESCRIBE DETAIL delta.`{sales}`", None, resolve).iloc[0]
    assert by_path["name"] is None and by_path["id"] == row["id"]


# --- OPTIMIZE ------------------------------------------------------------------------------------


def test_optimize_compacts_and_keeps_data(resolve, tables) -> None:
    sales = tables["retail_datalake.local_gold.sales"]
    before = DeltaTable(str(sales)).to_pandas().sort_values("id", ignore_index=True)
    out = execute("OPTIMIZE retail_datalake.local_gold.sales", None, resolve)
    metrics = out.loc[0, "metrics"]
    assert out.loc[0, "path"] == str(sales.resolve())
    assert metrics["numFilesRemoved"] == 6 and metrics["numFilesAdded"] == 2
    assert metrics["filesAdded"]["totalFiles"] == 2 and metrics["partitionsOptimized"] == 2
    table = DeltaTable(str(sales))
    assert len(table.file_uris()) == 2
    after = table.to_pandas().sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(before[after.columns], after, check_dtype=False)


def test_optimize_where_partition(resolve, tables) -> None:
    sales = tables["retail_datalake.local_gold.sales"]
    out = execute("OPTIMIZE sales WHERE region = :r", {"r": "north"}, resolve)
    assert out.loc[0, "metrics"]["numFilesRemoved"] == 3
    assert len(DeltaTable(str(sales)).file_uris()) == 4
    out = execute("OPTIMIZE sales WHERE region IN ('north', 'south') AND region != 'east'", None, resolve)
    assert out.loc[0, "metrics"]["numFilesRemoved"] == 3
    assert len(DeltaTable(str(sales)).file_uris()) == 2


def test_optimize_where_non_partition_refused(resolve, tables) -> None:
    version = DeltaTable(str(tables["retail_datalake.local_gold.sales"])).version()
    with pytest.raises(SqlError, match="partition columns"):
        execute("OPTIMIZE sales WHERE id > 3", None, resolve)
    assert DeltaTable(str(tables["retail_datalake.local_gold.sales"])).version() == version


def test_optimize_zorder(resolve, tables) -> None:
    sales = tables["retail_datalake.local_gold.sales"]
    out = execute("OPTIMIZE sales ZORDER BY (amount, id)", None, resolve)
    assert out.loc[0, "metrics"]["numFilesRemoved"] == 6
    assert _ids(sales) == [1, 2, 11, 12, 21, 22]
    execute("OPTIMIZE sales ZORDER BY id", None, resolve)  # parentheses optional
    assert DeltaTable(str(sales)).history(1)[0]["operation"] == "OPTIMIZE"


@pytest.mark.parametrize("cols, match", [("(region)", "partition column"), ("(nope)", "does not exist")])
def test_optimize_zorder_refused(resolve, tables, cols: str, match: str) -> None:
    sales = tables["retail_datalake.local_gold.sales"]
    with pytest.raises(SqlError, match=match):
        execute(f"OPTIMIZE sales ZORDER BY {cols}", None, resolve)
    assert DeltaTable(str(sales)).version() == 2


# --- VACUUM --------------------------------------------------------------------------------------


def test_vacuum_dry_run_lists_unreferenced_files(resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    live = {str(Path(p)) for p in DeltaTable(str(orders)).file_uris()}
    stale = _files_on_disk(orders) - live
    assert len(stale) == 2
    out = execute("VACUUM orders RETAIN 0 HOURS DRY RUN", None, resolve, NO_CHECK)
    assert list(out.columns) == ["path"] and set(out["path"]) == stale
    assert _files_on_disk(orders) == live | stale  # dry run deletes nothing
    assert execute("VACUUM orders DRY RUN", None, resolve).empty  # default 168 h keeps recent files


def test_vacuum_guard_refuses_short_retention(resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    before = _files_on_disk(orders)
    with pytest.raises(RetentionTooShortError) as info:
        execute("VACUUM orders RETAIN 0 HOURS", None, resolve)
    message = str(info.value)
    assert "168 h" in message and "7 days" in message and "time travel" in message
    assert "spark.databricks.delta.retentionDurationCheck.enabled = false" in message
    assert _files_on_disk(orders) == before
    assert DeltaTable(str(orders)).version() == 2


def test_vacuum_override_deletes(resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    out = execute("VACUUM orders RETAIN 0 HOURS", None, resolve, NO_CHECK)
    assert out["path"].tolist() == [str(orders.resolve())]
    assert out.attrs["num_files_deleted"] == 2
    assert _files_on_disk(orders) == {str(Path(p)) for p in DeltaTable(str(orders)).file_uris()}
    assert _ids(orders) == [10, 11, 12]
    with pytest.raises(SqlError, match="removed by VACUUM"):  # version 0's files are gone, as on Databricks
        execute("RESTORE orders TO VERSION AS OF 0", None, resolve)
    assert _ids(orders) == [10, 11, 12]


def test_vacuum_default_keeps_recent_files(resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    before = _files_on_disk(orders)
    out = execute("VACUUM orders", None, resolve)
    assert out.attrs["num_files_deleted"] == 0 and _files_on_disk(orders) == before


def test_vacuum_uses_table_retention_property(resolve) -> None:
    execute("ALTER TABLE orders SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = 'interval 0 hours')",
            None, resolve)
    out = execute("VACUUM orders DRY RUN", None, resolve)
    assert len(out) == 2


# --- RESTORE -------------------------------------------------------------------------------------


def test_restore_version(resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    out = execute("RESTORE TABLE orders TO VERSION AS OF :v", {"v": 1}, resolve)
    assert _ids(orders) == [1, 2, 3]
    assert DeltaTable(str(orders)).version() == 3
    row = out.iloc[0]
    assert row["num_of_files_after_restore"] == 2 and row["num_restored_files"] == 2
    assert row["num_removed_files"] == 1
    assert row["table_size_after_restore"] == sum(os.path.getsize(p) for p in DeltaTable(str(orders)).file_uris())
    assert row["restored_files_size"] > 0 and row["removed_files_size"] > 0
    hist = execute("DESCRIBE HISTORY orders LIMIT 1", None, resolve)
    assert hist.loc[0, "operation"] == "RESTORE"


@pytest.mark.parametrize("version", [3, 99])
def test_restore_missing_version(resolve, tables, version: int) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    with pytest.raises(VersionNotFoundError, match=r"versions 0\.\.2 exist") as info:
        execute(f"RESTORE orders TO VERSION AS OF {version}", None, resolve)
    assert "orders" in str(info.value)
    assert DeltaTable(str(orders)).version() == 2 and _ids(orders) == [10, 11, 12]


def test_restore_current_version_is_noop(resolve, tables) -> None:
    out = execute("RESTORE orders VERSION AS OF 2", None, resolve)
    assert out.loc[0, "num_removed_files"] == 0
    assert DeltaTable(str(tables["retail_datalake.local_silver.orders"])).version() == 2


def test_restore_timestamp(resolve, tmp_path: Path) -> None:
    path = tmp_path / "ts"
    write_deltalake(path, _frame([1]))
    time.sleep(0.02)
    middle = dt.datetime.now(dt.UTC)
    time.sleep(0.02)
    write_deltalake(path, _frame([2]), mode="append")
    table = f"delta.`{path}`"
    execute(f"RESTORE {table} TO TIMESTAMP AS OF :ts", {"ts": middle}, resolve)
    assert _ids(path) == [1] and DeltaTable(str(path)).version() == 2
    with pytest.raises(VersionNotFoundError, match="before the earliest"):
        execute(f"RESTORE {table} TO TIMESTAMP AS OF '2000-01-01 00:00:00'", None, resolve)
    assert DeltaTable(str(path)).version() == 2


# --- TBLPROPERTIES -------------------------------------------------------------------------------


def test_tblproperties_round_trip(resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    empty = execute("ALTER TABLE orders SET TBLPROPERTIES ('quality' = 'silver', delta.appendOnly = false, "
                    "'owner' = :o)", {"o": "x'; DROP TABLE y"}, resolve)
    assert empty.empty
    props = execute("SHOW TBLPROPERTIES orders", None, resolve)
    assert list(props.columns) == ["key", "value"]
    got = dict(zip(props["key"], props["value"], strict=True))
    assert got["quality"] == "silver" and got["delta.appendOnly"] == "false"
    assert got["owner"] == "x'; DROP TABLE y" and "delta.minReaderVersion" in got
    one = execute("SHOW TBLPROPERTIES orders ('quality')", None, resolve)
    assert one.values.tolist() == [["quality", "silver"]]
    missing = execute("SHOW TBLPROPERTIES orders ('nope')", None, resolve)
    assert missing.loc[0, "value"] == "Table orders does not have property: nope"
    assert DeltaTable(str(orders)).metadata().configuration["quality"] == "silver"


@pytest.mark.parametrize("props, match", [
    ("'delta.appendOnyl' = 'true'", "unknown Delta property"),
    ("'delta.appendOnly' = 'maybe'", "'true' or 'false'"),
    ("'delta.feature.deletionVectors' = 'supported'", "not supported locally"),
])
def test_set_tblproperties_refused(resolve, tables, props: str, match: str) -> None:
    with pytest.raises(SqlError, match=match):
        execute(f"ALTER TABLE orders SET TBLPROPERTIES ({props})", None, resolve)
    assert DeltaTable(str(tables["retail_datalake.local_silver.orders"])).version() == 2


def test_unset_tblproperties(resolve, tables) -> None:
    assert execute("ALTER TABLE orders UNSET TBLPROPERTIES IF EXISTS ('nope')", None, resolve).empty
    with pytest.raises(SqlError, match="does not exist"):
        execute("ALTER TABLE orders UNSET TBLPROPERTIES ('nope')", None, resolve)
    execute("ALTER TABLE orders SET TBLPROPERTIES ('quality' = 'silver')", None, resolve)
    with pytest.raises(SqlError, match="not supported locally"):
        execute("ALTER TABLE orders UNSET TBLPROPERTIES ('quality')", None, resolve)


# --- Change Data Feed: refused before anything changes -------------------------------------------


@pytest.mark.parametrize("props", [
    "'delta.enableChangeDataFeed' = 'true'",
    "delta.enableChangeDataFeed = true",
    "'quality' = 'gold', 'DELTA.ENABLECHANGEDATAFEED' = 'TRUE'",
    "`delta`.`enableChangeDataFeed` true",
])
def test_change_data_feed_refused_on_alter(resolve, tables, props: str) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    with pytest.raises(UnsupportedLocallyError, match="Databricks-only") as info:
        execute(f"ALTER TABLE orders SET TBLPROPERTIES ({props})", None, resolve)
    assert "retail_lakehouse.engine.watermarks" in str(info.value) and "last_processed_timestamp" in str(info.value)
    assert isinstance(info.value, SqlError)
    dt = DeltaTable(str(orders))
    assert dt.version() == 2 and "quality" not in dt.metadata().configuration


def test_change_data_feed_false_is_accepted(resolve, tables) -> None:
    execute("ALTER TABLE orders SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'false')", None, resolve)
    dt = DeltaTable(str(tables["retail_datalake.local_silver.orders"]))
    assert dt.metadata().configuration["delta.enableChangeDataFeed"] == "false"
    assert dt.protocol().min_writer_version < 4  # no changeDataFeed writer feature: Sail can still write


@pytest.mark.parametrize("statement, args", [
    ("CREATE TABLE t (id INT) USING delta TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')", None),
    ("CREATE OR REPLACE TABLE t TBLPROPERTIES (delta.enableChangeDataFeed = TRUE) AS SELECT 1 AS id", None),
    ("ALTER TABLE IDENTIFIER(:t) SET TBLPROPERTIES ('delta.enableChangeDataFeed' = :on)", {"t": "a.b.c", "on": True}),
    ("SELECT * FROM table_changes('a.b.c', 2)", None),
    ("SELECT count(*) FROM Table_Changes ('a.b.c', 0, 5) WHERE _change_type = 'insert'", None),
])
def test_refuse_unsupported_refuses(statement: str, args) -> None:
    with pytest.raises(UnsupportedLocallyError, match="Change Data Feed is a Databricks-only feature"):
        refuse_unsupported(statement, args)


@pytest.mark.parametrize("statement", [
    "CREATE TABLE t (id INT) USING delta TBLPROPERTIES ('delta.enableChangeDataFeed' = 'false')",
    "ALTER TABLE t SET TBLPROPERTIES ('quality' = 'gold')",
    "ALTER TABLE t UNSET TBLPROPERTIES ('delta.enableChangeDataFeed')",
    "SELECT 'table_changes(x)' AS s, table_changes FROM t -- table_changes(t, 1)",
    "SELECT * FROM t WHERE note = 'delta.enableChangeDataFeed = true'",
])
def test_refuse_unsupported_lets_others_through(statement: str) -> None:
    refuse_unsupported(statement)


# --- Sail reads what delta-rs restored -----------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    _, port = server.listening_address
    # create(), not getOrCreate(): that returns the engine's session when one is open, which stop() would end.
    session = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").create()
    yield session
    session.stop()
    server.stop()


def test_sail_reads_restored_table(spark, resolve, tables) -> None:
    orders = tables["retail_datalake.local_silver.orders"]
    execute("RESTORE orders TO VERSION AS OF 0", None, resolve)
    rows = spark.read.format("delta").load(str(orders)).orderBy("id").collect()
    assert [r["id"] for r in rows] == [1, 2]
