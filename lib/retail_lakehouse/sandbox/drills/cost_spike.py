"""Drill: an ad-hoc report job on a large on-demand cluster is run again and again (a cost spike)."""

from __future__ import annotations

import datetime as dt

from retail_lakehouse.sandbox.drills import DrillResult, register
from retail_lakehouse.sandbox.drills._jobs import ensure_one_task_job

JOB = "drill_adhoc_report"
RUNS = 4


@register("cost_spike", notebook="cost_review", summary="an ad-hoc job on a large on-demand cluster run 4 times today")
def cost_spike() -> DrillResult:
    """Run a short job on 8 x r5.4xlarge on-demand workers four times."""
    from retail_lakehouse.databricks import workspace

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
    today = dt.datetime.now(dt.UTC).date()
    return DrillResult(
        name="cost_spike",
        notebook="cost_review",
        description=f"Job {JOB} ran {RUNS} times today on 8 x r5.4xlarge on-demand workers.",
        parameters={"env": "local", "start_date": (today - dt.timedelta(days=6)).isoformat(), "end_date": today.isoformat()},
        facts={"job": JOB, "runs": RUNS, "run_ids": run_ids, "extra_runs": RUNS - 1},
    )
