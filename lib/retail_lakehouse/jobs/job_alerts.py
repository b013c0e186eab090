"""Alerts for job runs: a failed run (its tasks' retries exhausted) notifies `job:<job>`, a
successful run resolves it (and those of the jobs it ran as run-job tasks).

    from retail_lakehouse.jobs.job_alerts import notify_run
    notify_run(run)          # the runner calls it once per run, at the end

The alert links the run's folder (run.json and the executed notebooks) and gives the papermill
command of `job_failure_triage` for that run. Cost per run: a successful run asks `alerts.open_keys`
(locally a directory listing, no query) and resolves only the keys that are open; a failed run
sends (delivery and the row, waited for at most `wait` seconds). Never raises.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from retail_lakehouse import alerts
from retail_lakehouse.jobs.job_runs import JobRun, workspace_run_id

__all__ = ["alert_for", "notify_run"]

log = logging.getLogger(__name__)

DEFAULT_WAIT_SECONDS = 5.0


def alert_for(run: JobRun) -> alerts.Alert:
    """The alert of a failed run: which tasks failed, after how many attempts, and why."""
    failed = [
        t for t in (run.task(k) for k in dict.fromkeys(t.task_key for t in run.tasks)) if t.state == "FAILED"
    ]
    parts = []
    for t in failed[:3]:
        why = (
            f"{t.error_class}: {(t.error_message or '').split(chr(10))[0][:160]}"
            if t.error_class
            else "failed"
        )
        tries = f"{t.attempt} attempt{'s' if t.attempt != 1 else ''}, retries exhausted"
        parts.append(f"task {t.task_key} ({tries}) {why}")
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    what = "; ".join(parts) + more if parts else "an upstream task failed"
    return alerts.Alert(
        key=f"job:{run.job}",
        severity="critical" if run.env == "prod" else "error",
        source="job",
        summary=f"{run.job_name} run {run.run_id} FAILED: {what}",
        link=run.output_dir,
        runbook=alerts.runbook_page("job_failure_triage"),
        command=alerts.papermill_command(
            "job_failure_triage",
            f"runs/job_failure_triage-{run.run_id}.ipynb",
            env=run.env,
            job_run_id=workspace_run_id(run.run_id) if run.env == "local" else run.run_id,
            job=run.job_name,
        ),
    )


def _chained(run: JobRun) -> list[str]:
    """Keys of the jobs a successful run ran as run-job tasks (they succeeded too: resolve theirs)."""
    keys = []
    for task in run.tasks:
        if task.child_run_id and task.state == "SUCCESS" and task.output_path:
            try:  # a run-job task's output_path is the child run's folder
                child = json.loads((Path(task.output_path) / "run.json").read_text())
                keys.append(f"job:{child['job']}")
            except (OSError, ValueError, KeyError) as exc:  # no child run.json: nothing to resolve for it
                log.debug("no child run %s: %s", task.child_run_id, exc)
    return keys


def notify_run(run: JobRun, *, wait: float = DEFAULT_WAIT_SECONDS) -> alerts.AlertOutcome | None:
    """Alert on a failed run, resolve on a successful one (a canceled run: nothing).

    Args:
        run: the finished run.
        wait: seconds to wait for delivery; then it finishes in the background (`alerts.flush`).

    Returns:
        What was done, or None when there was nothing to do. Never raises: a problem is logged and
        added to `run.warnings`.
    """
    try:
        if run.state == "FAILED":
            return alerts.send(alert_for(run), env=run.env, wait=wait)
        if run.state == "SUCCESS":
            key = f"job:{run.job}"
            resolved = alerts.update([], [key, *_chained(run)], prefix="job:", env=run.env, wait=wait)
            return resolved.get(key) or next(iter(resolved.values()), None)
        return None
    except Exception as exc:  # noqa: BLE001 - alerting never fails a job
        log.warning("job %s run %s: alerting failed: %s", run.job, run.run_id, exc)
        run.warnings.append(f"alerting failed: {type(exc).__name__}: {str(exc)[:300]}")
        return None
