"""engine.sql on tables with several versions: every Delta utility statement, routing and bad input."""

from __future__ import annotations

import pytest

from retail_lakehouse import engine
from retail_lakehouse.core.errors import (
    RetentionTooShortError,
    SqlError,
    TableNotFoundError,
    UnsupportedLocallyError,
    VersionNotFoundError,
)
from retail_lakehouse.engine import writes

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


@pytest.fixture
def fresh(versioned):
    """A second session on the engine's server, stopped after the test: an open Spark Connect
    client sends a cleanup request at interpreter exit, which retries for minutes once the server
    is gone."""
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(engine._server_url).create()
    yield session
    session.stop()


def test_new_session_sees_tables_by_three_part_name(fresh):
    engine.register_tables(fresh)
    assert fresh.sql(f"SELECT count(*) FROM {T}").collect()[0][0] == 3


def test_a_lazy_session_registers_a_table_when_a_request_first_names_it(fresh):
    """What the job runner's task kernels use: no table registered up front; reads, SQL and
    catalog calls register what they name (one round trip each); listings see every table."""
    engine.register_lazily(fresh)
    assert not engine.is_registered(fresh, T)
    assert fresh.table(T).count() == 3  # DataFrame API: the name is in the request's plan
    assert engine.is_registered(fresh, T)
    assert fresh.catalog.tableExists(T)
    other = "retail_datalake.local_gold.engine_demo_lazy"
    engine.sql(f"CREATE TABLE {other} (id BIGINT) USING delta")  # created after the session opened
    try:
        assert fresh.sql(f"SELECT count(*) FROM {other}").collect()[0][0] == 0
    finally:
        engine.sql(f"DROP TABLE IF EXISTS {other}")
    with pytest.raises(Exception, match="(?i)not found|no_such_table_x"):  # missing is still an error
        fresh.sql("SELECT count(*) FROM retail_datalake.local_gold.no_such_table_x").collect()
    listed = {r[1] for r in fresh.sql("SHOW TABLES IN retail_datalake.local_gold").collect()}
    on_disk = {n.rsplit(".", 1)[1] for n in engine.local_tables() if n.startswith("retail_datalake.local_gold.")}
    assert "engine_demo" in on_disk and on_disk <= listed, (on_disk, listed)


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


# --- Change Data Feed: refused before anything changes, the table stays writable ------------------

CDF = "retail_datalake.local_gold.engine_cdf_guard"


def _state(table):
    props = dict(rows(engine.sql(f"SHOW TBLPROPERTIES {table}")))
    return props, engine.sql(f"DESCRIBE HISTORY {table} LIMIT 1").toPandas()["version"][0]


@pytest.fixture
def cdf_table():
    engine.sql(f"DROP TABLE IF EXISTS {CDF}")
    engine.sql(f"CREATE TABLE {CDF} (id BIGINT, v STRING) USING delta TBLPROPERTIES ('quality' = 'gold')")
    engine.sql(f"INSERT INTO {CDF} VALUES (1, 'a'), (2, 'b')")
    yield CDF
    engine.sql(f"DROP TABLE IF EXISTS {CDF}")


@pytest.mark.parametrize("statement, args", [
    (f"ALTER TABLE {CDF} SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')", None),
    (f"alter table {CDF} set tblproperties (DELTA.enableChangeDataFeed = TRUE)", None),
    ("ALTER TABLE IDENTIFIER(:t) SET TBLPROPERTIES ('owner' = 'x', 'delta.enableChangeDataFeed' = :on)",
     {"t": CDF, "on": "true"}),
])
def test_change_data_feed_refused_and_table_stays_writable(cdf_table, statement, args):
    before = _state(cdf_table)
    with pytest.raises(UnsupportedLocallyError, match="Change Data Feed is a Databricks-only feature") as info:
        engine.sql(statement, args)
    message = str(info.value)
    assert "retail_lakehouse.engine.watermarks" in message and "last_processed_timestamp" in message
    assert "On Databricks targets the tables get the property" in message
    assert _state(cdf_table) == before  # properties and version unchanged
    engine.sql(f"INSERT INTO {cdf_table} VALUES (3, 'c')")
    engine.sql(f"UPDATE {cdf_table} SET v = 'bb' WHERE id = 2")
    engine.sql(
        f"MERGE INTO {cdf_table} t USING (SELECT 3 AS id, 'cc' AS v UNION ALL SELECT 4, 'd') s ON t.id = s.id "
        "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)"
    )
    engine.sql(f"DELETE FROM {cdf_table} WHERE id = 1")
    assert sorted(rows(engine.sql(f"SELECT id, v FROM {cdf_table}"))) == [(2, "bb"), (3, "cc"), (4, "d")]


def test_change_data_feed_false_is_accepted(cdf_table):
    engine.sql(f"ALTER TABLE {cdf_table} SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'false')")
    assert _state(cdf_table)[0]["delta.enableChangeDataFeed"] == "false"
    engine.sql(f"INSERT INTO {cdf_table} VALUES (3, 'c')")
    assert engine.sql(f"SELECT count(*) FROM {cdf_table}").collect()[0][0] == 3


def test_change_data_feed_refused_on_create_and_as_session_default(lakehouse_home):
    name = "retail_datalake.local_gold.engine_cdf_new"
    with pytest.raises(UnsupportedLocallyError, match=r"^TBLPROPERTIES \('delta.enableChangeDataFeed' = 'true'\) is refused"):
        engine.sql(f"CREATE TABLE {name} (id BIGINT) USING delta TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')")
    assert not engine.table_dir(name).exists()
    key = "spark.databricks.delta.properties.defaults.enableChangeDataFeed"
    with pytest.raises(UnsupportedLocallyError, match="Databricks-only"):
        engine.sql(f"SET {key} = true")
    assert rows(engine.sql(f"SET {key} = false")) == [(key, "false")]


def test_table_changes_refused_clearly(cdf_table):
    with pytest.raises(UnsupportedLocallyError, match="table_changes") as info:
        engine.sql(f"SELECT * FROM table_changes('{cdf_table}', 0)")
    assert "unknown" not in str(info.value) and "retail_lakehouse.engine.watermarks" in str(info.value)


def test_table_with_change_data_feed_on_in_its_log_says_how_to_recover(cdf_table):
    from deltalake import DeltaTable

    DeltaTable(str(engine.table_dir(cdf_table))).alter.set_table_properties({"delta.enableChangeDataFeed": "true"})
    with pytest.raises(UnsupportedLocallyError, match="'delta.enableChangeDataFeed' = 'false'"):
        engine.sql(f"INSERT INTO {cdf_table} VALUES (3, 'c')")
    engine.sql(f"ALTER TABLE {cdf_table} SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'false')")
    engine.sql(f"INSERT INTO {cdf_table} VALUES (3, 'c')")
    assert engine.sql(f"SELECT count(*) FROM {cdf_table}").collect()[0][0] == 3


# --- CACHE / UNCACHE / CLEAR CACHE: documented no-ops ---------------------------------------------


@pytest.mark.parametrize("statement", [
    f"CACHE TABLE {CDF}",
    f"cache lazy table {CDF} OPTIONS ('storageLevel' 'DISK_ONLY')",
    f"UNCACHE TABLE {CDF}",
    "UNCACHE TABLE IF EXISTS retail_datalake.local_gold.no_such_table",
    "CLEAR CACHE",
])
def test_cache_statements_are_noops_with_a_notice(cdf_table, caplog, statement):
    with caplog.at_level("INFO", logger="retail_lakehouse.engine"):
        out = engine.sql(statement)
    assert out.columns == ["notice"]
    (notice,) = [r[0] for r in out.collect()]
    assert "no-op on the local engine" in notice and "Databricks SQL warehouses cache" in notice
    assert [r.getMessage() for r in caplog.records if r.name == "retail_lakehouse.engine"] == [notice]


def test_cache_unknown_table_and_cache_as_query():
    with pytest.raises(TableNotFoundError, match="no_such_table"):
        engine.sql("CACHE TABLE retail_datalake.local_gold.no_such_table")
    with pytest.raises(TableNotFoundError, match="IF EXISTS"):
        engine.sql("UNCACHE TABLE retail_datalake.local_gold.no_such_table")
    engine.sql("CACHE TABLE engine_cached_view AS SELECT 1 AS x")
    assert rows(engine.sql("SELECT x FROM engine_cached_view")) == [(1,)]


# --- a handled engine error prints no pyspark ERROR record ------------------------------------------

_FAILING = """
import logging.config
from retail_lakehouse import engine
from retail_lakehouse.core.errors import SqlError

engine.get_spark()
# ipykernel (traitlets) configures logging like this, which re-enables pyspark's connect logger.
logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
try:
    engine.sql("SELECT _metadata.file_path FROM range(1)")
except SqlError as exc:
    print("raised", type(exc).__name__, "_metadata" in str(exc))
"""


def test_failing_statement_raises_without_a_pyspark_error_record(versioned, lakehouse_home):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_LOG_LEVEL"}
    env.update(SPARK_REMOTE=engine._server_url, LAKEHOUSE_HOME=str(lakehouse_home))
    done = subprocess.run([sys.executable, "-c", _FAILING], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "raised SqlError True", done.stderr
    assert "GRPC Error received" not in done.stderr and '"level": "ERROR"' not in done.stderr, done.stderr


_OWN_SESSION_THEN_EXIT = """
from pyspark.sql import SparkSession
from retail_lakehouse import engine
url = engine.start_local_server()
own = SparkSession.builder.remote(url).create()  # not through get_spark, never stopped
assert own.range(3).count() == 3
engine.stop_local_server()  # as the test suite's teardown does, before interpreter exit
print("ran")
"""


def test_a_process_with_an_unstopped_session_of_its_own_server_exits_promptly(lakehouse_home):
    """pyspark sends a cleanup request from every open client at exit; against the stopped
    embedded server it would retry for about ten minutes (it once held `make test` that long)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env.update(LAKEHOUSE_HOME=str(lakehouse_home))
    done = subprocess.run(
        [sys.executable, "-c", _OWN_SESSION_THEN_EXIT], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0 and done.stdout.strip() == "ran", done.stderr


def test_a_checkpoint_of_a_second_session_stays_on_that_session(spark):
    """pyspark binds `localCheckpoint()`'s result to the thread's active session (the process's first):
    `engine.local_checkpoint` binds it to the frame's own, so its relation is found."""
    from pyspark.sql import SparkSession

    second = SparkSession.builder.remote(engine.start_local_server()).create()
    try:
        assert SparkSession.active() is not second  # the process's first session stays the active one
        part = engine.local_checkpoint(second.range(10).filter("id > 2"))
        assert part.sparkSession is second
        assert part.count() == 7
        assert SparkSession.active() is not second  # the active session is restored
        assert engine.local_checkpoint(spark.range(5)).count() == 5  # and the first one's works too
    finally:
        second.stop()


def test_pysparks_own_config_reads_are_answered_once_per_session(spark):
    """Each collect() asked the server for binaryAsBytes; now the first answer is kept until a set."""
    from pyspark.sql import SparkSession

    from retail_lakehouse.engine import _client

    session = SparkSession.builder.remote(engine.start_local_server()).create()
    try:
        sent: list[str] = []
        config = session.client.config

        def counted(operation):
            sent.append(operation.WhichOneof("op_type"))
            return config(operation)

        session.client.config = counted
        _client.tune(session)
        assert session.client._use_reattachable_execute is False  # noqa: SLF001
        for _ in range(5):
            assert session.range(3).collect()[0][0] == 0
        assert sent.count("get_with_default") == 1
        session.conf.set("spark.sql.shuffle.partitions", "3")  # a set forgets the kept answers
        session.range(1).collect()
        assert sent.count("get_with_default") == 2
        assert session.conf.get("spark.sql.shuffle.partitions") == "3"  # other reads still go out
        assert sent.count("get") >= 1
    finally:
        session.stop()


def test_new_sessions_do_not_rescan_the_installed_packages(spark, monkeypatch):
    """Sail looks up its `pysail.datasources` entry points for each new session (one per notebook
    task); the engine keeps the first answer. Other entry-point groups are still read each time."""
    import importlib.metadata as metadata

    from pyspark.sql import SparkSession

    spark.sql("SELECT 1").collect()  # the engine's own session has asked once
    scans: list[int] = []
    scan = metadata.distributions

    def counted(**kwargs):
        scans.append(1)
        return scan(**kwargs)

    monkeypatch.setattr(metadata, "distributions", counted)
    for _ in range(2):
        session = SparkSession.builder.remote(engine.start_local_server()).create()
        try:
            assert session.sql("SELECT 2 AS x").collect()[0].x == 2
        finally:
            session.stop()
    assert scans == []
    assert metadata.entry_points(group="pysail.datasources") is metadata.entry_points(group="pysail.datasources")
    metadata.entry_points(group="console_scripts")
    assert scans == [1]
