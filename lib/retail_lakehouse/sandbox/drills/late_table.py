"""Drill: the gold build has not run for two business days: silver moved on, gold did not."""

from __future__ import annotations

import datetime as dt

from retail_lakehouse.sandbox.drills import DrillResult, register

TABLES = ("gold.fact_sales", "gold.agg_daily_sales")


@register("late_table", notebook="backfill",
          summary="gold.fact_sales / agg_daily_sales two days behind silver -> sla_freshness fails; backfill gold")
def late_table() -> DrillResult:
    """Delete the last two business days from gold.fact_sales and gold.agg_daily_sales."""
    from retail_lakehouse import engine
    from retail_lakehouse.sandbox.drills import _local

    keys = sorted(r[0] for r in _local.table("gold.fact_sales").select("date_key").distinct().collect())
    cut = keys[-2] if len(keys) > 2 else keys[-1]
    first, last = (dt.datetime.strptime(str(k), "%Y%m%d").date().isoformat() for k in (cut, keys[-1]))
    versions = {}
    for ref in TABLES:
        versions[ref] = _local.version(ref)
        engine.sql(f"DELETE FROM {_local.full(ref)} WHERE date_key >= {cut}", env="local").collect()
    return DrillResult(
        name="late_table",
        notebook="backfill",
        description=f"the gold build did not run from {first} on: {', '.join(TABLES)} stop the day before while "
        f"silver.orders has the newer days. sla_freshness fails them and says how late; backfill gold {first}..{last}.",
        parameters={"env": "local", "table": "orders", "start_date": first, "end_date": last, "layers": "gold",
                    "check_quality": False, "dry_run": False},
        facts={"tables": list(TABLES), "check": "sla_freshness", "cut_date_key": cut, "versions_before": versions},
    )
