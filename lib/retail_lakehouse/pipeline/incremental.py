"""Silver's incremental read of bronze: the Delta change feed where the table has it, the watermark otherwise.

A bronze table declaring `change_data_feed` is created with ``delta.enableChangeDataFeed = true`` on
Databricks targets (`TableDef.create_properties`); there silver reads the rows inserted after the
bronze version it last processed (`last_processed_version` in `monitoring.watermarks`), up to the
version it saw at the start of the run, and records that version (a table whose properties do not turn
the feed on, e.g. created before the registry declared it, is read by watermark). Locally the feed is never on (Sail
cannot write such tables; the engine refuses them with UnsupportedLocallyError), and silver reads
the rows ingested after its `last_processed_timestamp` (`_ingested_at`), as the runbook describes.
Bronze is append-only, so its change feed holds inserts only: both reads give the same new rows.

What the tests exercise locally: `read_mode`, the watermark read, and `rows_added_between`, which
computes the rows the change feed would return from the Delta log (the files added by the commits
between two versions, read with delta-rs); a real `readChangeFeed` read runs only on Databricks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from retail_lakehouse import engine
from retail_lakehouse.core.tables import CDF_PROPERTY
from retail_lakehouse.engine.watermarks import get_watermark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from retail_lakehouse.core.config import Settings
    from retail_lakehouse.core.tables import TableDef

ReadMode = Literal["change_feed", "watermark"]
PIPELINE = "silver"
_CDF_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


def read_mode(bronze: TableDef, settings: Settings) -> ReadMode:
    """`change_feed` for a bronze table declaring CDF on a Databricks target; `watermark` otherwise."""
    return "change_feed" if bronze.change_data_feed and not settings.is_local else "watermark"


def by_watermark(bronze_rows: DataFrame, watermark: str | None) -> DataFrame:
    """The rows ingested after the watermark (all rows when there is none)."""
    from pyspark.sql import functions as F

    if not watermark:
        return bronze_rows
    return bronze_rows.filter(F.col("_ingested_at") > F.lit(watermark).cast("timestamp"))


def by_change_feed(spark: SparkSession, full: str, since_version: int, until_version: int) -> DataFrame:
    """The rows inserted by the commits after `since_version` up to `until_version` (Databricks: the
    table's change feed; bronze is append-only, so only inserts are taken)."""
    from pyspark.sql import functions as F

    feed = (spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", since_version + 1).option("endingVersion", until_version).table(full))
    return feed.filter(F.col("_change_type") == "insert").drop(*_CDF_COLUMNS)


def feed_enabled(full: str, env: str) -> bool:
    """Whether the table's properties turn its change feed on (a table created before the registry
    declared it, and not altered since, has none: silver then reads it by watermark)."""
    rows = engine.sql(f"SHOW TBLPROPERTIES {full}", env=env).collect()
    return any(str(r[0]) == CDF_PROPERTY and str(r[1]).lower() == "true" for r in rows)


def current_version(full: str, env: str) -> int:
    """The table's latest Delta version (`DESCRIBE HISTORY`; served by delta-rs locally)."""
    return int(engine.sql(f"DESCRIBE HISTORY {full} LIMIT 1", env=env).collect()[0]["version"])


def last_version(table: str, settings: Settings) -> int | None:
    """The bronze version silver last processed for `table`, or None (never recorded)."""
    from retail_lakehouse.core.tables import registry

    full = registry().get("watermarks", layer="monitoring").full_name(settings)
    try:
        rows = engine.sql(f"SELECT last_processed_version FROM {full} WHERE pipeline = '{PIPELINE}' "
                          f"AND source = '{table}'", env=settings.env).collect()
    except Exception:  # noqa: BLE001 - no watermarks table yet: nothing recorded
        return None
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def new_bronze_rows(
    spark: SparkSession, bronze: TableDef, table: str, settings: Settings
) -> tuple[DataFrame, int | None]:
    """Bronze rows silver has not processed for `table`, and the bronze version to record (None when
    reading by watermark).

    The first run with the feed on (no version recorded yet) reads by watermark and records the
    version it saw, so the feed takes over from the next run without a gap or a double read.
    """
    full = bronze.full_name(settings)
    rows = spark.table(full)
    watermark = get_watermark(PIPELINE, table, env=settings.env)
    if read_mode(bronze, settings) == "watermark" or not feed_enabled(full, settings.env):
        return by_watermark(rows, watermark), None
    until = current_version(full, settings.env)
    since = last_version(table, settings)
    if since is None or not watermark:
        return by_watermark(rows, watermark), until
    return by_change_feed(spark, full, since, until), until


def rows_added_between(spark: SparkSession, bronze: TableDef, settings: Settings, since_version: int,
                       until_version: int) -> DataFrame:
    """What the change feed returns for an append-only table, computed from its Delta log: the rows of
    the data files added by the commits after `since_version` up to `until_version` (delta-rs). Used
    locally, where tables carry no change feed, to test that the feed and the watermark agree."""
    from retail_lakehouse.engine.change_rows import rows_added

    arrow = rows_added(bronze.full_name(settings), since_version, until_version, bronze.arrow_schema(), settings)
    return spark.createDataFrame(arrow.to_pandas()) if arrow.num_rows else spark.createDataFrame([], schema=bronze.ddl())
