"""Drill: the day's stores extract arrived empty and the snapshot reload replaced silver.stores with nothing."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

REF = "silver.stores"


@register("empty_source_day", notebook="restore",
          summary="an empty stores extract emptied silver.stores -> has_rows fails; restore the last good version")
def empty_source_day() -> DrillResult:
    """Delete every row of silver.stores (a full snapshot of an empty extract)."""
    from retail_lakehouse import engine
    from retail_lakehouse.sandbox.drills import _local

    version, rows = _local.version(REF), _local.count(REF)
    engine.sql(f"DELETE FROM {_local.full(REF)}", env="local").collect()
    return DrillResult(
        name="empty_source_day",
        notebook="restore",
        description=f"the stores extract of the day was empty and the snapshot reload left {REF} without rows "
        f"(it had {rows}, version {version}). The quality checks fail has_rows (the table is expected to have "
        f"rows); restore version {version}.",
        parameters={"env": "local", "table": REF, "version": str(version), "dry_run": False},
        facts={"table": REF, "check": "has_rows", "rows_before": rows, "version_before": version},
    )
