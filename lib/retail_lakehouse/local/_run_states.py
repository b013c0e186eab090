"""Pure helpers of the local Jobs API: run-now overrides, repair subsets, and the states and
outputs a run shows (Databricks' life-cycle and result states from the local run records)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from databricks.sdk.service import jobs as dbjobs

from retail_lakehouse.core.errors import ConfigError
from retail_lakehouse.databricks import bundle as bundle_mod
from retail_lakehouse.jobs import runner
from retail_lakehouse.local import _runs
from retail_lakehouse.local._common import invalid, ms

if TYPE_CHECKING:
    from retail_lakehouse.databricks.bundle import JobSpec, TaskSpec
    from retail_lakehouse.jobs.job_runs import TaskRun

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

RESULT_STATES = {
    "SUCCESS": dbjobs.RunResultState.SUCCESS,
    "FAILED": dbjobs.RunResultState.FAILED,
    "CANCELED": dbjobs.RunResultState.CANCELED,
    "UPSTREAM_FAILED": dbjobs.RunResultState.UPSTREAM_FAILED,
    "EXCLUDED": dbjobs.RunResultState.EXCLUDED,
}


def normalized_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as the SDK's JobSettings knows them (unknown keys dropped)."""
    if not isinstance(settings, dict) or not settings.get("tasks"):
        raise invalid("a job needs settings with at least one task")
    body = {k: v for k, v in settings.items() if k not in ("job_id",)}
    return dbjobs.JobSettings.from_dict(body).as_dict()


def with_notebook_params(spec: JobSpec, notebook_params: Any) -> JobSpec:
    """`notebook_params` of run-now override the notebook tasks' base parameters, as on Databricks."""
    if not notebook_params:
        return spec
    extra = {str(k): bundle_mod.param_str(v) for k, v in dict(notebook_params).items()}
    tasks = tuple(
        dataclasses.replace(t, base_parameters={**t.base_parameters, **extra}) if t.notebook_path else t
        for t in spec.tasks
    )
    return dataclasses.replace(spec, tasks=tasks)


def downstream(spec: JobSpec, chosen: set[str]) -> set[str]:
    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for t in spec.tasks:
            if t.task_key not in out | chosen and set(t.depends_on) & (out | chosen):
                out.add(t.task_key)
                grew = True
    return out


def restricted(spec: JobSpec, keep: set[str]) -> JobSpec:
    """The job with only `keep` tasks; dependencies on tasks not rerun are dropped (they ran before)."""
    tasks = tuple(
        dataclasses.replace(t, depends_on=tuple(d for d in t.depends_on if d in keep))
        for t in spec.tasks
        if t.task_key in keep
    )
    return dataclasses.replace(spec, tasks=tasks)


def task_spec(spec: JobSpec | None, key: str) -> TaskSpec | None:
    if spec is None:
        return None
    try:
        return spec.task(key)
    except ConfigError:
        return None


def task_state(
    t: TaskRun, tspec: TaskSpec | None, *, running: bool
) -> tuple[dbjobs.RunLifeCycleState, dbjobs.RunResultState | None, str]:
    if t.state == "FAILED" and running and tspec is not None and t.attempt < runner.attempts(tspec):
        return dbjobs.RunLifeCycleState.WAITING_FOR_RETRY, None, f"attempt {t.attempt} failed; retrying"
    if t.state == "EXCLUDED":
        return dbjobs.RunLifeCycleState.SKIPPED, dbjobs.RunResultState.EXCLUDED, "run_if condition not met"
    message = {
        "SUCCESS": "",
        "FAILED": f"{t.error_class}: {t.error_message}" if t.error_class else "Task failed",
        "UPSTREAM_FAILED": "Upstream task(s) failed",
        "CANCELED": "Run canceled",
    }.get(t.state, t.state)
    return dbjobs.RunLifeCycleState.TERMINATED, RESULT_STATES.get(t.state), message[:1000]


def job_state(
    s: dict[str, Any], outcomes: dict[str, TaskRun]
) -> tuple[dbjobs.RunLifeCycleState, dbjobs.RunResultState | None, str]:
    if s["running"]:
        started = any(s["runs"].values())
        life = dbjobs.RunLifeCycleState.RUNNING if started else dbjobs.RunLifeCycleState.PENDING
        return life, None, "In run" if started else "Waiting to start"
    if s["errors"] and not outcomes:
        return dbjobs.RunLifeCycleState.INTERNAL_ERROR, None, "; ".join(s["errors"])[:1000]
    last = next((r for r in reversed(list(s["runs"].values())) if r), None)
    states = {t.state for t in outcomes.values()}
    if last is not None and last.state == "CANCELED":
        return dbjobs.RunLifeCycleState.TERMINATED, dbjobs.RunResultState.CANCELED, "Run canceled"
    if states & {"FAILED", "UPSTREAM_FAILED"}:
        failed = sorted(k for k, t in outcomes.items() if t.state == "FAILED")
        return dbjobs.RunLifeCycleState.TERMINATED, dbjobs.RunResultState.FAILED, f"Task {', '.join(failed)} failed"
    if "CANCELED" in states:
        return dbjobs.RunLifeCycleState.TERMINATED, dbjobs.RunResultState.CANCELED, "Run canceled"
    return dbjobs.RunLifeCycleState.TERMINATED, dbjobs.RunResultState.SUCCESS, ""


def run_status(
    life: dbjobs.RunLifeCycleState, result: dbjobs.RunResultState | None, message: str
) -> dbjobs.RunStatus:
    v2 = {
        "TERMINATED": "TERMINATED",
        "SKIPPED": "TERMINATED",
        "INTERNAL_ERROR": "TERMINATED",
        "RUNNING": "RUNNING",
        "WAITING_FOR_RETRY": "WAITING",
        "BLOCKED": "BLOCKED",
        "PENDING": "PENDING",
    }.get(life.value, "RUNNING")
    status = dbjobs.RunStatus(state=dbjobs.RunLifecycleStateV2State(v2))
    if v2 == "TERMINATED":
        code, typ = {
            "SUCCESS": ("SUCCESS", "SUCCESS"),
            "FAILED": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"),
            "CANCELED": ("USER_CANCELED", "SUCCESS"),
            "UPSTREAM_FAILED": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"),
            "EXCLUDED": ("SKIPPED", "SUCCESS"),
        }.get(result.value if result else "", ("INTERNAL_ERROR", "INTERNAL_ERROR"))
        status.termination_details = dbjobs.TerminationDetails(
            code=dbjobs.TerminationCodeCode(code), type=dbjobs.TerminationTypeType(typ), message=message or None
        )
    return status


def notebook_output(path: str | None) -> tuple[str | None, str | None]:
    """(error traceback, last text output) of an executed notebook."""
    if not path or not Path(path).is_file():
        return None, None
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None, None
    trace, last = None, None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(out.get("traceback") or []))
            text = (out.get("data") or {}).get("text/plain") or out.get("text")
            if text:
                last = "".join(text) if isinstance(text, list) else str(text)
    return trace, last


def task_view(
    key: str,
    tspec: TaskSpec | None,
    outcomes: dict[str, TaskRun],
    s: dict[str, Any],
    clusters: dict[tuple[str, str], str],
    job_id: int | None,
) -> dbjobs.RunTask:
    t = outcomes.get(key)
    lid = s["where"].get(key)
    cluster_key = tspec.job_cluster_key if tspec else (t.compute.get("job_cluster_key") if t else None)
    if t is not None and lid is not None:
        life, result, message = task_state(t, tspec, running=s["running"])
        task_run_id = _runs.task_run_id_for(lid, key, t.attempt)
        start, end = ms(t.start), ms(t.end)
        attempt = max(0, t.attempt - 1)
        page = Path(t.output_path).as_uri() if t.output_path and Path(t.output_path).is_absolute() else None
    else:
        deps_done = tspec is not None and all(
            d in outcomes and outcomes[d].state == "SUCCESS" for d in tspec.depends_on
        )
        if s["running"]:
            life = dbjobs.RunLifeCycleState.RUNNING if deps_done else dbjobs.RunLifeCycleState.BLOCKED
            result, message = None, ("Running" if deps_done else "Waiting for upstream tasks")
        else:
            life, result, message = dbjobs.RunLifeCycleState.INTERNAL_ERROR, None, "; ".join(s["errors"]) or "not run"
        base = s["repairs"][-1] if s["repairs"] else _runs.base_local_id(next(iter(s["runs"])))
        task_run_id = _runs.task_run_id_for(base, key, 1)
        start = end = None
        attempt = 0
        page = None
        lid = base
    notebook = None
    if tspec is not None and tspec.notebook_path is not None:
        notebook = dbjobs.NotebookTask(
            notebook_path=str(tspec.notebook_path),
            base_parameters=dict(tspec.base_parameters) or None,
            source=dbjobs.Source.WORKSPACE,
        )
    cluster_id = clusters.get((lid, cluster_key)) if cluster_key else None
    return dbjobs.RunTask(
        task_key=key,
        run_id=task_run_id,
        attempt_number=attempt,
        state=dbjobs.RunState(life_cycle_state=life, result_state=result, state_message=message),
        status=run_status(life, result, message),
        start_time=start,
        end_time=end or 0,
        setup_duration=0,
        cleanup_duration=0,
        execution_duration=(end - start) if start and end else 0,
        run_duration=(end - start) if start and end else None,
        depends_on=[dbjobs.TaskDependency(task_key=d) for d in tspec.depends_on] if tspec else None,
        run_if=dbjobs.RunIf(tspec.run_if) if tspec else None,
        notebook_task=notebook,
        run_job_task=dbjobs.RunJobTask(job_id=_runs.job_id_for(tspec.run_job) or 0)
        if tspec and tspec.run_job
        else None,
        job_cluster_key=cluster_key,
        cluster_instance=dbjobs.ClusterInstance(cluster_id=cluster_id) if cluster_id else None,
        run_page_url=page,
    )

def repair_history(s: dict[str, Any], job_id: int | None) -> list[dbjobs.RepairHistoryItem] | None:
    if not s["repairs"]:
        return None
    items = []
    for i, lid in enumerate([_runs.base_local_id(s["repairs"][0]), *s["repairs"]]):
        run = s["runs"].get(lid)
        items.append(
            dbjobs.RepairHistoryItem(
                type=dbjobs.RepairHistoryItemType.ORIGINAL if i == 0 else dbjobs.RepairHistoryItemType.REPAIR,
                id=None if i == 0 else _runs.run_id_for(lid),
                start_time=ms(run.start) if run else None,
                end_time=ms(run.end) if run and run.end else None,
                state=dbjobs.RunState(
                    life_cycle_state=dbjobs.RunLifeCycleState.TERMINATED
                    if run and run.end
                    else dbjobs.RunLifeCycleState.RUNNING,
                    result_state=RESULT_STATES.get(run.state) if run and run.end else None,
                ),
                task_run_ids=[_runs.task_run_id_for(lid, k, t.attempt) for k, t in run.outcomes.items()]
                if run
                else [],
            )
        )
    return items
