"""Drill: bronze.stores is gone (dropped, its data and Delta log deleted); the store database still holds it."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

REF = "bronze.stores"


@register("lost_bronze_table", notebook="rebuild_from_source",
          summary="bronze.stores deleted -> re-ingested from the store database (the system of record)")
def lost_bronze_table() -> DrillResult:
    """DROP TABLE bronze.stores (a managed local table: its folder goes too)."""
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.sandbox.drills import _local

    full = _local.full(REF)
    keys = int(_local.table(REF).select("store_id").distinct().count())
    engine.sql(f"DROP TABLE {full}", env="local").collect()
    gone = not (engine.table_dir(full, load_settings("local")) / "_delta_log").exists()
    return DrillResult(
        name="lost_bronze_table",
        notebook="rebuild_from_source",
        description=f"{REF} ({keys} stores) was dropped: its data and Delta log are gone, and bronze is the "
        "first copy in the lakehouse. Re-ingest it from the store database, which still holds every store.",
        parameters={"env": "local", "table": REF, "dry_run": False},
        facts={"table": REF, "keys_before": keys, "folder_deleted": gone},
    )
