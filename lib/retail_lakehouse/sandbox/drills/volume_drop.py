"""Drill: the POS feed delivered a twentieth of a normal day (most registers never uploaded)."""

from __future__ import annotations

import datetime as dt

from retail_lakehouse.sandbox.drills import DrillResult, register

REF = "silver.pos_transactions"


@register("volume_drop", notebook="quality_failure_triage",
          summary="the newest POS day has 5% of its rows -> the volume check fails against the trailing days")
def volume_drop() -> DrillResult:
    """Delete 19 of every 20 events of the newest business day from silver.pos_transactions."""
    from retail_lakehouse import engine
    from retail_lakehouse.jobs import runner
    from retail_lakehouse.pipeline import quality
    from retail_lakehouse.sandbox.drills import _local

    day = max(r[0] for r in _local.table(REF).select("event_date").distinct().collect())
    where = f"event_date = DATE'{day.isoformat()}'"
    version, before = _local.version(REF), _local.count(REF, where)
    engine.sql(
        f"DELETE FROM {_local.full(REF)} WHERE {where} AND pmod(hash(event_id), 20) <> 0", env="local"
    ).collect()
    after = _local.count(REF, where)
    run_id = runner.new_run_id()
    report = quality.run_checks([REF], run_id=run_id, env="local")  # recorded for the triage
    failed = sorted(r.check_name for r in report.failed_errors)
    return DrillResult(
        name="volume_drop",
        notebook="quality_failure_triage",
        description=f"{REF} has {after} rows on {day} instead of {before}: quality run {run_id} failed "
        f"{', '.join(failed) or 'nothing'} (the volume check, against the median of the trailing days).",
        parameters={"env": "local", "table": REF, "date": dt.datetime.now(dt.UTC).date().isoformat()},
        facts={"table": REF, "check": "volume", "day": day.isoformat(), "rows_before": before, "rows_after": after,
               "version_before": version, "run_id": run_id, "failed_checks": failed},
    )
