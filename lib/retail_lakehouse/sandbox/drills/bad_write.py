"""Drill: a bad overwrite of gold.fact_sales (a job wrote a handful of wrong rows over the table)."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register


@register("bad_write", notebook="restore", summary="a bad overwrite of gold.fact_sales -> restore the last good version")
def bad_write() -> DrillResult:
    """Overwrite gold.fact_sales with 10 rows whose amounts are zero."""
    from pyspark.sql import functions as F

    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes
    from retail_lakehouse.sandbox.drills import _local

    ref = "gold.fact_sales"
    good_version, good_rows = _local.version(ref), _local.count(ref)
    spark = engine.get_spark("local")
    bad = spark.createDataFrame(_local.table(ref).limit(10).toArrow())
    bad = bad.withColumn("net_amount", F.lit(0).cast("decimal(14,2)")).withColumn("_run_id", F.lit("bad_write"))
    writes.write_table(bad, ref, mode="overwrite", env="local")
    bad_version = _local.version(ref)
    return DrillResult(
        name="bad_write",
        notebook="restore",
        description=f"gold.fact_sales (version {good_version}, {good_rows} rows) was overwritten by 10 rows with "
        f"zero amounts (version {bad_version}). Restore version {good_version}.",
        parameters={"env": "local", "table": ref, "version": str(good_version), "dry_run": False},
        facts={"good_version": good_version, "good_rows": good_rows, "bad_version": bad_version, "bad_rows": 10},
    )
