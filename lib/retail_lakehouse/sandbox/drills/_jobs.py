"""Ad-hoc jobs the drills create through the jobs API, as an engineer would on Databricks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

NOTEBOOKS = Path(__file__).with_name("notebooks")


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


def ensure_one_task_job(
    w: WorkspaceClient,
    name: str,
    *,
    task_key: str,
    notebook: str,
    parameters: dict[str, str],
    cluster_key: str,
    cluster: dict[str, Any],
) -> int:
    """A job of one notebook task (from `drills/notebooks/`, no retries) on its own job cluster."""
    return ensure_job(
        w,
        name,
        {
            "max_concurrent_runs": 1,
            "job_clusters": [{"job_cluster_key": cluster_key, "new_cluster": {"spark_version": "15.4.x-scala2.12", **cluster}}],
            "tasks": [
                {
                    "task_key": task_key,
                    "job_cluster_key": cluster_key,
                    "max_retries": 0,
                    "notebook_task": {"notebook_path": str(NOTEBOOKS / notebook), "base_parameters": parameters},
                }
            ],
        },
    )
