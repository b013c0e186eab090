"""Helpers of the drills (local only): table versions, counts and commits through the engine."""

from __future__ import annotations

from retail_lakehouse import engine
from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.tables import registry


def full(ref: str) -> str:
    """Full name of a `layer.name` table in env local."""
    return registry().get(ref).full_name(load_settings("local"))


def version(ref: str) -> int:
    """The table's current Delta version."""
    from deltalake import DeltaTable

    return DeltaTable(str(engine.table_dir(full(ref), load_settings("local")))).version()


def count(ref: str, where: str | None = None) -> int:
    """Rows of a table (optionally filtered)."""
    df = table(ref)
    return (df.filter(where) if where else df).count()


def table(ref: str):
    """The table as a DataFrame of the engine's session (registering tables other sessions created)."""
    spark = engine.get_spark("local")
    try:
        df = spark.table(full(ref))
        df.columns  # noqa: B018 - resolve now
    except Exception:  # noqa: BLE001 - a table created by another session: register and retry
        engine.register_tables(spark, load_settings("local"))
        df = spark.table(full(ref))
    return df
