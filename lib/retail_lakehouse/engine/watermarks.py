"""Incremental-processing state: one `last_processed_timestamp` per (pipeline, source).

Stored in `monitoring.watermarks`, as in the runbook. A watermark is the largest `_processed_at` (or
`_ingested_at`, ...) value a step has consumed, never the wall clock, so re-runs and backfills of
generated history behave like the original run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import ParameterError

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping, Sequence

WATERMARK_TABLE = "monitoring.watermarks"
_SCHEMA = (
    "pipeline string, source string, last_processed_timestamp string, last_processed_version bigint, "
    "run_id string, updated_at timestamp"
)


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
    return get_watermarks(pipeline, [source], env=env)[source]


def get_watermarks(pipeline: str, sources: Sequence[str], env: str | None = None) -> dict[str, str | None]:
    """The last processed values of several sources of one pipeline step, read in one query.

    Args:
        pipeline: the consumer.
        sources: what it consumes.
        env: environment.

    Returns:
        source -> stored text, or None for a source the step never consumed.
    """
    from pyspark.sql import functions as F

    from retail_lakehouse import engine
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.engine import writes

    settings = load_settings(env)
    out: dict[str, str | None] = dict.fromkeys(sources)
    tdef = registry().get(WATERMARK_TABLE)
    full = tdef.full_name(settings)
    if not sources or not _table_exists(full, settings.env):
        return out
    if settings.is_local:
        writes.ensure_table(tdef, env=settings.env)  # registers it if another session created it
    rows = (
        engine.get_spark(settings.env)
        .table(full)
        .filter((F.col("pipeline") == F.lit(pipeline)) & F.col("source").isin(list(out)))
        .select("source", "last_processed_timestamp")
        .collect()
    )
    for row in rows:  # (pipeline, source) is the table's key: one row each
        out[row[0]] = row[1]
    return out


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
    set_watermarks(pipeline, {source: value}, run_id, env=env, version=version)


def set_watermarks(
    pipeline: str,
    values: Mapping[str, str | dt.datetime | dt.date],
    run_id: str,
    env: str | None = None,
    *,
    version: int | None = None,
) -> None:
    """Store the last processed values of several sources of one step in one MERGE (a newer row wins).

    Args:
        pipeline: the consumer.
        values: source -> the largest value consumed.
        run_id: the run that consumed them.
        env: environment.
        version: optionally, the Delta version of the sources that were read.

    Raises:
        ParameterError: an empty value.
    """
    from retail_lakehouse.engine.journal import write_monitoring

    if not values:
        return
    settings = load_settings(env)
    now = datetime.now(UTC)
    rows = [(pipeline, source, _as_text(value), version, run_id, now) for source, value in values.items()]
    # One row per source (the keys of a mapping); under the local job runner written at the job
    # run's end with the other steps' watermarks (engine.journal), else now.
    write_monitoring(WATERMARK_TABLE, rows, _SCHEMA, merge=True, env=settings.env)
