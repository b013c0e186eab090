"""Drill: a job task collects a large DataFrame to a memory-capped driver and dies with MemoryError."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register
from retail_lakehouse.sandbox.drills._jobs import ensure_one_task_job

JOB = "drill_oom_collect"


@register("oom", notebook="diagnose_oom", summary="a task collects a large result to a memory-capped driver -> MemoryError")
def oom() -> DrillResult:
    """Run a one-task job whose notebook caps its memory and collects a large DataFrame to the driver."""
    from retail_lakehouse.databricks import workspace

    w = workspace.connect("local")
    ensure_one_task_job(
        w,
        JOB,
        task_key="collect_order_items",
        notebook="oom_collect.ipynb",
        parameters={"env": "local", "table": "silver.order_items"},
        cluster_key="small_driver",
        cluster={
            "node_type_id": "i3.xlarge",
            "num_workers": 2,
            "spark_conf": {"spark.driver.memory": "2g", "spark.driver.maxResultSize": "1g"},
            "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1},
        },
    )
    run = workspace.run_job(w, JOB, progress=False, timeout=600)
    result = run.state.result_state.value if run.state and run.state.result_state else None
    return DrillResult(
        name="oom",
        notebook="diagnose_oom",
        description=f"Job {JOB} run {run.run_id} ended {result}: task collect_order_items collected "
        "silver.order_items x400 to a driver with a memory budget and died with MemoryError.",
        parameters={"env": "local", "job": JOB, "job_run_id": str(run.run_id)},
        facts={"run_id": run.run_id, "result_state": result, "task_key": "collect_order_items",
               "kind": "collect_to_driver", "category": "out_of_memory"},
    )
