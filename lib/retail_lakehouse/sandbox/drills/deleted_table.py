"""Drill: gold.fact_sales is gone: dropped, its data and Delta log deleted."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register


@register("deleted_table", notebook="rebuild_from_source",
          summary="gold.fact_sales deleted (data and log) -> rebuild it from the sources")
def deleted_table() -> DrillResult:
    """DROP TABLE gold.fact_sales (a managed local table: its folder goes too)."""
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.sandbox.drills import _local

    ref = "gold.fact_sales"
    full = _local.full(ref)
    rows, version = _local.count(ref), _local.version(ref)
    engine.sql(f"DROP TABLE {full}", env="local").collect()
    gone = not (engine.table_dir(full, load_settings("local")) / "_delta_log").exists()
    return DrillResult(
        name="deleted_table",
        notebook="rebuild_from_source",
        description=f"{ref} ({rows} rows, version {version}) was dropped: its data and Delta log are gone. "
        "Rebuild it from the registry and its sources.",
        parameters={"env": "local", "table": ref, "dry_run": False},
        facts={"table": ref, "rows_before": rows, "version_before": version, "folder_deleted": gone},
    )
