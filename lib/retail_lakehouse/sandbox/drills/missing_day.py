"""Drill: a day of silver and gold order rows is missing (deleted by a faulty cleanup)."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

TABLES = {
    "silver.orders": "order_date = DATE'{day}'",
    "silver.order_items": "order_date = DATE'{day}'",
    "gold.fact_sales": "date_key = {key}",
    "gold.agg_daily_sales": "date_key = {key}",
}


@register("missing_day", notebook="backfill", summary="a day of silver/gold order rows deleted -> backfill it")
def missing_day() -> DrillResult:
    """Delete the second business day's rows from silver orders/order_items and gold fact/aggregate."""
    from retail_lakehouse import engine
    from retail_lakehouse.sandbox.drills import _local

    days = sorted(r[0] for r in _local.table("silver.orders").select("order_date").distinct().collect())
    day = days[1] if len(days) > 1 else days[0]
    key = int(day.strftime("%Y%m%d"))
    before = {}
    for ref, pred in TABLES.items():
        where = pred.format(day=day.isoformat(), key=key)
        before[ref] = _local.count(ref, where)
        engine.sql(f"DELETE FROM {_local.full(ref)} WHERE {where}", env="local").collect()
    return DrillResult(
        name="missing_day",
        notebook="backfill",
        description=f"the rows of {day} were deleted from {', '.join(TABLES)}. Backfill orders for that day.",
        parameters={"env": "local", "table": "orders", "start_date": day.isoformat(), "end_date": day.isoformat(),
                    "layers": "silver,gold", "dry_run": False},
        facts={"day": day.isoformat(), "rows_before_incident": before},
    )
