"""Drill: the store database is unreachable during ingestion (the file is moved away), then comes back."""

from __future__ import annotations

import dataclasses

from retail_lakehouse.sandbox.drills import DrillResult, register

JOB = "retail_ingestion"


@register("failed_job", notebook="job_failure_triage", summary="source database unreachable during retail_ingestion, then fixed -> retry")
def failed_job() -> DrillResult:
    """Move the SQLite source away, run retail_ingestion (its OLTP tasks fail), then put the source back."""
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.databricks.bundle import load_bundle
    from retail_lakehouse.jobs import runner
    from retail_lakehouse.jobs.job_runs import workspace_run_id
    from retail_lakehouse.ops import KERNEL_PRELOAD

    path = load_settings("local").sqlite_path()
    assert path is not None
    moved = path.with_name(path.name + ".moved-by-drill")
    path.replace(moved)
    # The job as deployed, but each task tried once: the drill shows the failure, not the retries.
    bundle = load_bundle(target="local")
    job = bundle.job(JOB)
    once = dataclasses.replace(job, tasks=tuple(dataclasses.replace(t, max_retries=0) for t in job.tasks))
    bundle = dataclasses.replace(bundle, jobs={**bundle.jobs, job.key: once})
    try:
        run = runner.run_job(JOB, env="local", bundle=bundle, preload=KERNEL_PRELOAD)
    finally:
        moved.replace(path)  # the database is back: a retry now succeeds
    failed = sorted(k for k, t in run.outcomes.items() if t.state == "FAILED")
    run_id = workspace_run_id(run.run_id)
    return DrillResult(
        name="failed_job",
        notebook="job_failure_triage",
        description=f"{JOB} run {run.run_id} failed: the store database was unreachable for {', '.join(failed)}. "
        "It is reachable again; retry the failed tasks.",
        parameters={"env": "local", "job": JOB, "job_run_id": str(run_id), "action": "retry", "dry_run": False},
        facts={"run_id": run_id, "local_run_id": run.run_id, "failed_tasks": failed, "category": "source_unreachable",
               "state": run.state},
    )
