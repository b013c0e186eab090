"""Drill: an ad-hoc report job on a large on-demand cluster is run again and again (a cost spike)."""

from __future__ import annotations

import datetime as dt

from retail_lakehouse.drills import DrillResult, register
from retail_lakehouse.drills.oom import NOTEBOOKS, ensure_job

JOB = "drill_adhoc_report"
RUNS = 4


@register("cost_spike", notebook="cost_review", summary="an ad-hoc job on a large on-demand cluster run 4 times today")
def cost_spike() -> DrillResult:
    """Run a short job on 8 x r5.4xlarge on-demand workers four times."""
    from retail_lakehouse import workspace

    w = workspace.connect("local")
    ensure_job(
        w,
        JOB,
        {
            "max_concurrent_runs": 1,
            "job_clusters": [
                {
                    "job_cluster_key": "large_on_demand",
                    "new_cluster": {
                        "spark_version": "15.4.x-scala2.12",
                        "node_type_id": "r5.4xlarge",
                        "num_workers": 8,
                        "aws_attributes": {"availability": "ON_DEMAND"},
                    },
                }
            ],
            "tasks": [
                {
                    "task_key": "report",
                    "job_cluster_key": "large_on_demand",
                    "max_retries": 0,
                    "notebook_task": {
                        "notebook_path": str(NOTEBOOKS / "adhoc_report.ipynb"),
                        "base_parameters": {"env": "local", "seconds": "2"},
                    },
                }
            ],
        },
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
