"""Drill: the POS feed stopped: its events of the last two business days never arrived."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

STALE = {"bronze.pos_events": "to_date(try_to_timestamp(event_ts)) >= DATE'{day}'", "silver.pos_transactions": "event_date >= DATE'{day}'"}


@register("stale_source", notebook="data_freshness", summary="the POS source stopped sending -> freshness flags it")
def stale_source() -> DrillResult:
    """Remove the POS events of the last two business days from bronze and silver (as if never sent)."""
    from retail_lakehouse import engine
    from retail_lakehouse.sandbox.drills import _local

    days = sorted(r[0] for r in _local.table("silver.pos_transactions").select("event_date").distinct().collect())
    cut = days[-2] if len(days) > 2 else days[-1]
    versions = {}
    for ref, pred in STALE.items():
        versions[ref] = _local.version(ref)
        engine.sql(f"DELETE FROM {_local.full(ref)} WHERE {pred.format(day=cut.isoformat())}", env="local").collect()
    return DrillResult(
        name="stale_source",
        notebook="data_freshness",
        description=f"the POS source sent nothing from {cut} on: bronze.pos_events and silver.pos_transactions "
        "lag the other tables. Freshness must flag them.",
        parameters={"env": "local"},
        facts={"stale": sorted(STALE), "cut_day": cut.isoformat(), "versions_before": versions},
    )
