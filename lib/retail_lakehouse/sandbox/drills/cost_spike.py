"""Drill: an ad-hoc report job on a large on-demand cluster is run again and again (a cost spike).

The review compares this week with the week before, so the sandbox first gets a past: the nightly
chain (`retail_daily` and the jobs it runs) once a day for the 13 days before today, copied from its
real local run (`sandbox.run_history`; idempotent, so a second drill adds no history). Against that
week the ad-hoc job is new, the nightly jobs about flat, and the total up by the spike.
"""

from __future__ import annotations

import datetime as dt

from retail_lakehouse.sandbox import run_history
from retail_lakehouse.sandbox.drills import DrillResult, register
from retail_lakehouse.sandbox.drills._jobs import ensure_one_task_job

JOB = "drill_adhoc_report"
RUNS = 4
NIGHTLY = "retail_daily"  # the chain copied into the history: retail_ingestion, _transformation, _data_quality_checks
HISTORY_DAYS = 13  # this week's 6 days before today and the whole previous week


@register("cost_spike", notebook="cost_review", summary="an ad-hoc job on a large on-demand cluster run 4 times today")
def cost_spike() -> DrillResult:
    """Give the nightly chain a daily history, then run a short job on 8 x r5.4xlarge on-demand workers four times."""
    from retail_lakehouse.databricks import workspace

    today = dt.datetime.now(dt.UTC).date()
    history = run_history.backfill(
        NIGHTLY, start=today - dt.timedelta(days=HISTORY_DAYS), end=today - dt.timedelta(days=1), env="local"
    )
    w = workspace.connect("local")
    ensure_one_task_job(
        w,
        JOB,
        task_key="report",
        notebook="adhoc_report.ipynb",
        parameters={"env": "local", "seconds": "2"},
        cluster_key="large_on_demand",
        cluster={"node_type_id": "r5.4xlarge", "num_workers": 8, "aws_attributes": {"availability": "ON_DEMAND"}},
    )
    run_ids = [workspace.run_job(w, JOB, progress=False, timeout=300).run_id for _ in range(RUNS)]
    return DrillResult(
        name="cost_spike",
        notebook="cost_review",
        description=(
            f"Job {JOB} ran {RUNS} times today on 8 x r5.4xlarge on-demand workers. The sandbox's history has "
            f"{NIGHTLY} (the nightly chain) once a day for the {HISTORY_DAYS} days before, so the review compares "
            "this week with last week."
        ),
        parameters={"env": "local", "start_date": (today - dt.timedelta(days=6)).isoformat(), "end_date": today.isoformat()},
        facts={
            "job": JOB,
            "runs": RUNS,
            "run_ids": run_ids,
            "extra_runs": RUNS - 1,
            "nightly": NIGHTLY,
            "history_written": history,
        },
    )
