"""Incremental-processing state: one `last_processed_timestamp` per (pipeline, source).

Stored in `monitoring.watermarks`, as in the runbook. A watermark is the largest `_processed_at` (or
`_ingested_at`, ...) value a step has consumed, never the wall clock, so re-runs and backfills of
generated history behave like the original run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retail_lakehouse.config import load_settings
from retail_lakehouse.errors import ParameterError

if TYPE_CHECKING:
    import datetime as dt

WATERMARK_TABLE = "monitoring.watermarks"


def _table_exists(full: str, env: str) -> bool:
    from retail_lakehouse import engine

    settings = load_settings(env)
    if settings.is_local:
        return (engine.table_dir(full, settings) / "_delta_log").is_dir()
    return engine.get_spark(env).catalog.tableExists(full)


def _as_text(value: str | dt.datetime | dt.date) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise ParameterError("value", "a watermark must not be empty")
        return value.strip()
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    return value.isoformat()


def get_watermark(pipeline: str, source: str, env: str | None = None) -> str | None:
    """The last processed value of a pipeline step, or None when the step never ran.

    Args:
        pipeline: the consumer, e.g. ``silver_to_gold``.
        source: what it consumes, e.g. ``silver.orders`` or ``fact_sales``.
        env: environment.

    Returns:
        The stored text (timestamps as ``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC) or None.
    """
    from retail_lakehouse import engine
    from retail_lakehouse.tables import registry

    settings = load_settings(env)
    full = registry().get(WATERMARK_TABLE).full_name(settings)
    if not _table_exists(full, settings.env):
        return None
    rows = engine.sql(
        f"SELECT last_processed_timestamp FROM {full} WHERE pipeline = :pipeline AND source = :source",
        {"pipeline": pipeline, "source": source},
        env=settings.env,
    ).collect()
    return rows[0][0] if rows else None


def set_watermark(
    pipeline: str,
    source: str,
    value: str | dt.datetime | dt.date,
    run_id: str,
    env: str | None = None,
    *,
    version: int | None = None,
) -> None:
    """Store the last processed value of a pipeline step (MERGE on pipeline, source).

    Args:
        pipeline: the consumer, e.g. ``silver_to_gold``.
        source: what it consumes.
        value: the largest value consumed (text, datetime or date).
        run_id: the run that consumed it.
        env: environment.
        version: optionally, the Delta version of the source that was read.

    Raises:
        ParameterError: an empty value.
    """
    from retail_lakehouse import engine, writes

    settings = load_settings(env)
    spark = engine.get_spark(settings.env)
    df = spark.createDataFrame(
        [(pipeline, source, _as_text(value), version, run_id, datetime.now(UTC))],
        "pipeline string, source string, last_processed_timestamp string, last_processed_version bigint, "
        "run_id string, updated_at timestamp",
    )
    writes.merge_into(df, WATERMARK_TABLE, keys=["pipeline", "source"], env=settings.env)
