"""A bundle job as Jobs API settings: the one conversion the deploy and the local workspace share.

`settings_of` turns a `JobSpec` (with the job's mapping as written in the bundle, for settings the
spec does not model: notifications, health rules, ...) into `JobSettings.as_dict()`; `settings_diff`
says where two settings differ, ignoring what the Jobs API adds or defaults on its own.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from retail_lakehouse.databricks.bundle import JobSpec, TaskSpec

__all__ = ["settings_diff", "settings_of"]

# Settings the Jobs API adds or defaults on its own; absent from the bundle they are not a difference.
_SERVER_KEYS = {
    "format", "run_as", "run_as_user_name", "edit_mode", "deployment", "queue", "creator_user_name",
    "budget_policy_id", "effective_budget_policy_id", "usage_policy_id", "effective_usage_policy_id",
    "performance_target", "disable_auto_optimization",
}  # fmt: skip
_DEFAULTS = {
    "run_if": "ALL_SUCCESS",
    "source": "WORKSPACE",
    "max_concurrent_runs": 1,
    "pause_status": "UNPAUSED",
}
# Lists whose elements are matched by a key, not by position.
_LIST_KEYS = ("task_key", "job_cluster_key", "name")


_TASK_BUILT = {
    "task_key", "run_if", "depends_on", "notebook_task", "run_job_task", "max_retries",
    "min_retry_interval_millis", "timeout_seconds", "job_cluster_key", "existing_cluster_id", "retry_on_timeout",
}  # fmt: skip
_JOB_BUILT = {"name", "tasks", "tags", "description", "job_clusters", "parameters", "schedule", "permissions"}


def _defaultish(key: str, value: Any) -> bool:
    return value in (None, {}, [], False, 0) or _DEFAULTS.get(key, object()) == value


def settings_diff(want: Any, have: Any, where: str, *, lenient: bool = False) -> list[str]:
    """Paths where the settings a deploy sends differ from the job's (server-added defaults ignored).

    Inside `new_cluster` the comparison is `lenient`: the workspace fills in many cluster settings,
    so only the keys the bundle declares are compared.
    """
    if isinstance(want, dict) and isinstance(have, dict):
        out = []
        for k, v in want.items():
            sub = f"{where}.{k}" if where else k
            if k not in have:
                if not _defaultish(k, v):
                    out.append(sub)
            else:
                out += settings_diff(v, have[k], sub, lenient=lenient or k == "new_cluster")
        if not lenient:
            out += [
                f"{where}.{k}" if where else k
                for k, v in have.items()
                if k not in want and k not in _SERVER_KEYS and not _defaultish(k, v)
            ]
        return out
    if isinstance(want, list) and isinstance(have, list):
        key = next(
            (k for k in _LIST_KEYS if want and all(isinstance(i, dict) and k in i for i in [*want, *have])),
            None,
        )
        if key is None:
            if len(want) != len(have):
                return [where]
            return [
                d
                for i, (a, b) in enumerate(zip(want, have, strict=True))
                for d in settings_diff(a, b, f"{where}[{i}]", lenient=lenient)
            ]
        mine, theirs = {i[key]: i for i in want}, {i[key]: i for i in have}
        if set(mine) != set(theirs):
            return [f"{where}[{', '.join(sorted(set(mine) ^ set(theirs)))}]"]
        return [d for k, a in mine.items() for d in settings_diff(a, theirs[k], f"{where}[{k}]", lenient=lenient)]
    if want == have or (
        isinstance(want, int | str) and str(want) == str(have) and not isinstance(want, bool)
    ):
        return []
    return [where]


def settings_of(
    job: JobSpec,
    job_id_of: Callable[[str], int | None],
    *,
    notebook_path: Callable[[Path], str] = str,
    raw: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A bundle job as Jobs API settings (`JobSettings.as_dict()`).

    Args:
        job: the job.
        job_id_of: job key -> job id, for run_job tasks.
        notebook_path: a task's notebook file -> the path the workspace knows it by (default: as is).
        raw: the job's mapping as written in the bundle; settings the JobSpec does not carry
            (max_concurrent_runs, notifications, ...) are taken from it.
        tags: tags added to the bundle's own.
    """
    from databricks.sdk.service.jobs import JobSettings

    raw = copy.deepcopy(raw or {})
    raw_tasks = {str(t.get("task_key")): t for t in raw.get("tasks") or [] if isinstance(t, dict)}
    tasks = [_task(t, raw_tasks.get(t.task_key, {}), job_id_of, notebook_path) for t in job.tasks]
    settings: dict[str, Any] = {k: v for k, v in raw.items() if k not in _JOB_BUILT}
    settings.setdefault("max_concurrent_runs", 1)
    settings.setdefault("format", "MULTI_TASK")
    settings.update(name=job.name, tasks=tasks)
    all_tags = {**{str(k): str(v) for k, v in (raw.get("tags") or {}).items()}, **(tags or {})}
    if all_tags:
        settings["tags"] = all_tags
    if job.description:
        settings["description"] = job.description
    if job.clusters:
        settings["job_clusters"] = [
            {"job_cluster_key": c.key, "new_cluster": dict(c.raw)} for c in job.clusters.values()
        ]
    if job.parameters:
        settings["parameters"] = [{"name": k, "default": v} for k, v in job.parameters.items()]
    if job.schedule:
        settings["schedule"] = dataclasses.asdict(job.schedule)
    return JobSettings.from_dict(settings).as_dict()


def _task(t: TaskSpec, raw: dict[str, Any], job_id_of: Callable[[str], int | None],
          notebook_path: Callable[[Path], str]) -> dict[str, Any]:
    task: dict[str, Any] = {k: v for k, v in raw.items() if k not in _TASK_BUILT}
    task.update(task_key=t.task_key, run_if=t.run_if, retry_on_timeout=bool(t.retry_on_timeout))
    if t.depends_on:
        task["depends_on"] = [{"task_key": d} for d in t.depends_on]
    if t.notebook_path is not None:
        task["notebook_task"] = {
            "notebook_path": notebook_path(Path(t.notebook_path)),
            "base_parameters": dict(t.base_parameters),
            "source": "WORKSPACE",
        }
    if t.run_job:
        task["run_job_task"] = {"job_id": job_id_of(t.run_job)}
        if t.run_job_parameters:
            task["run_job_task"]["job_parameters"] = dict(t.run_job_parameters)
    for name in ("max_retries", "min_retry_interval_millis", "timeout_seconds", "job_cluster_key", "existing_cluster_id"):
        value = getattr(t, name)
        if value is not None:
            task[name] = value
    return task
