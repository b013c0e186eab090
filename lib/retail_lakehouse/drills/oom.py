"""Drill: a job task collects a large DataFrame to a memory-capped driver and dies with MemoryError."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.drills import DrillResult, register

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

NOTEBOOKS = Path(__file__).with_name("notebooks")
JOB = "drill_oom_collect"


def ensure_job(w: WorkspaceClient, name: str, settings: dict[str, Any]) -> int:
    """Create a job through the jobs API (or reset the existing one of that name); return its id."""
    from databricks.sdk.service import jobs

    found = [j for j in w.jobs.list(name=name) if j.job_id is not None]
    spec = jobs.JobSettings.from_dict({"name": name, **settings})
    if found:
        w.jobs.reset(found[0].job_id, new_settings=spec)
        return int(found[0].job_id)
    created = w.jobs.create(
        name=name,
        tasks=spec.tasks,
        job_clusters=spec.job_clusters,
        max_concurrent_runs=spec.max_concurrent_runs,
    )
    return int(created.job_id)


@register("oom", notebook="diagnose_oom", summary="a task collects a large result to a memory-capped driver -> MemoryError")
def oom() -> DrillResult:
    """Run a one-task job whose notebook caps its memory and collects a large DataFrame to the driver."""
    from retail_lakehouse import workspace

    w = workspace.connect("local")
    ensure_job(
        w,
        JOB,
        {
            "max_concurrent_runs": 1,
            "job_clusters": [
                {
                    "job_cluster_key": "small_driver",
                    "new_cluster": {
                        "spark_version": "15.4.x-scala2.12",
                        "node_type_id": "i3.xlarge",
                        "num_workers": 2,
                        "spark_conf": {"spark.driver.memory": "2g", "spark.driver.maxResultSize": "1g"},
                        "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1},
                    },
                }
            ],
            "tasks": [
                {
                    "task_key": "collect_order_items",
                    "job_cluster_key": "small_driver",
                    "max_retries": 0,
                    "notebook_task": {
                        "notebook_path": str(NOTEBOOKS / "oom_collect.ipynb"),
                        "base_parameters": {"env": "local", "table": "silver.order_items"},
                    },
                }
            ],
        },
    )
    run = workspace.run_job(w, JOB, progress=False, timeout=600)
    result = run.state.result_state.value if run.state and run.state.result_state else None
    return DrillResult(
        name="oom",
        notebook="diagnose_oom",
        description=f"Job {JOB} run {run.run_id} ended {result}: task collect_order_items collected "
        "silver.order_items x400 to a driver capped by RLIMIT_AS and died with MemoryError.",
        parameters={"env": "local", "job": JOB, "run_id": str(run.run_id)},
        facts={"run_id": run.run_id, "result_state": result, "task_key": "collect_order_items",
               "kind": "collect_to_driver", "category": "out_of_memory"},
    )
