"""Drill: gold.fact_sales rewritten as hundreds of tiny files (a job writing with too many tasks)."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

FILES = 300


@register("small_files", notebook="optimize", summary="hundreds of tiny files in gold.fact_sales -> OPTIMIZE")
def small_files() -> DrillResult:
    """Rewrite gold.fact_sales (same rows) spread over ~300 tiny files."""
    from deltalake import DeltaTable

    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.engine import writes
    from retail_lakehouse.sandbox.drills import _local

    ref = "gold.fact_sales"
    spark = engine.get_spark("local")
    rows = _local.count(ref)
    frame = spark.createDataFrame(_local.table(ref).toArrow()).repartition(FILES)
    writes.write_table(frame, ref, mode="overwrite", env="local")
    path = engine.table_dir(_local.full(ref), load_settings("local"))
    files = len(DeltaTable(str(path)).file_uris())
    return DrillResult(
        name="small_files",
        notebook="optimize",
        description=f"gold.fact_sales now holds its {rows} rows in {files} tiny files. OPTIMIZE it.",
        parameters={"env": "local", "table": ref, "zorder_by": "store_sk", "dry_run": False},
        facts={"files": files, "rows": rows, "version": _local.version(ref)},
    )
