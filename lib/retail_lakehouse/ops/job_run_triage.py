"""Triage of a Databricks job run: find the run, read its tasks and errors, classify them, repair it.

The run is found through the workspace's jobs API (`w.jobs`), so the same code triages a local run
and a Databricks one. Each failed task's error is classified by the registry of
`failure_classifiers`. A retry is a Jobs API repair of the failed tasks
(`w.jobs.repair_run(rerun_all_failed_tasks=True)`), which keeps the original run as the record.
The procedure around it (a DAG run or a Databricks run, the audit row) is `job_failure_triage`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from retail_lakehouse.core.errors import JobNotFoundError, ParameterError
from retail_lakehouse.ops._outcome import Outcome
from retail_lakehouse.ops.failure_classifiers import Classification, classify

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

__all__ = ["RepairOutcome", "Triage", "find_run", "repair", "tail_lines", "target", "task_frame", "triage"]

_TERMINAL = {"TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
_FAILED_STATES = {"FAILED", "TIMEDOUT", "CANCELED", "UPSTREAM_FAILED", "MAXIMUM_CONCURRENT_RUNS_REACHED"}


# ----------------------------------------------------------------------------- finding the run

_JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .\-]{0,99}$")


def target(job: str, job_run_id: str) -> str:
    """Validate the notebook's `job` / `job_run_id` pair; return what `find_run` takes.

    Raises:
        ParameterError: a run id that is not a number, or a job name with characters job names do not have.
    """
    run_text, job_text = str(job_run_id or "").strip(), str(job or "").strip()
    if run_text and run_text.lower() != "manual":
        if not run_text.isdigit():
            raise ParameterError("job_run_id", f"{run_text!r} is not a run id; use the number from the run's page, "
                                 "or leave it empty for the latest failed run")
        return run_text
    if job_text and not _JOB_NAME.match(job_text):
        raise ParameterError("job", f"{job_text!r} is not a job name (letters, digits, space, '_', '-', '.')")
    return job_text


def _state(obj: Any) -> tuple[str | None, str | None]:
    state = obj.state if obj is not None else None
    life = state.life_cycle_state.value if state and state.life_cycle_state else None
    result = state.result_state.value if state and state.result_state else None
    return life, result


def find_run(w: WorkspaceClient, job_or_run: str, *, failed_only: bool = True, limit: int = 50) -> int | None:
    """The run to triage: a run id as given, else the latest failed run of the named job.

    Args:
        w: workspace client.
        job_or_run: a run id (digits), a job name, or empty for any job.
        failed_only: only failed runs count (else the latest finished run).
        limit: how many recent runs to look through.

    Returns:
        The run id, or None when no (failed) run was found.

    Raises:
        ParameterError: the job does not exist (the message lists the jobs).
    """
    text = job_or_run.strip()
    if text.isdigit():
        return int(text)
    job_id = None
    if text:
        from retail_lakehouse.databricks.workspace import job_id as lookup

        try:
            job_id = lookup(w, text)
        except JobNotFoundError as exc:
            raise ParameterError("job", str(exc)) from None
    runs = w.jobs.list_runs(job_id=job_id, completed_only=True, limit=min(limit, 100))
    for i, run in enumerate(runs):
        if i >= limit:
            break
        _, result = _state(run)
        if not failed_only or result in _FAILED_STATES:
            return int(run.run_id) if run.run_id is not None else None
    return None


def task_frame(run: dict[str, Any]) -> pd.DataFrame:
    """One row per task of a run (`workspace.get_run` output): state, attempt, times, error."""
    import pandas as pd

    rows = []
    for t in run.get("tasks") or []:
        state = t.get("state") or {}
        start, end = t.get("start_time") or None, t.get("end_time") or None
        rows.append(
            {
                "task_key": t.get("task_key"),
                "life_cycle_state": state.get("life_cycle_state"),
                "result_state": state.get("result_state"),
                "attempt": t.get("attempt_number", 0),
                "start": pd.to_datetime(start, unit="ms", utc=True) if start else pd.NaT,
                "duration_s": round((end - start) / 1000, 1) if start and end else None,
                "cluster_id": (t.get("cluster_instance") or {}).get("cluster_id"),
                "error": t.get("error") or (state.get("state_message") if state.get("result_state") in _FAILED_STATES else None),
                "error_trace": t.get("error_trace"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=["task_key", "life_cycle_state", "result_state", "attempt", "start", "duration_s", "cluster_id",
                 "error", "error_trace"],
    )


def tail_lines(text: str, chars: int) -> str:
    """The last `chars` characters of `text`, from the start of a line (never a word cut in two)."""
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    return cut.split("\n", 1)[1] if "\n" in cut else cut.split(" ", 1)[-1]


@dataclass
class Triage:
    """The triage of one run.

    Attributes:
        run_id: the run (None: nothing to triage).
        job_name: the run's job.
        result_state: SUCCESS, FAILED, ...
        tasks: per task, state and error (see `task_frame`).
        failed: per failed task, its classification.
        category: the run's category (of its first failed task), or `none`.
        diagnosis: one plain sentence.
        raw: the run as the jobs API returned it.
    """

    run_id: int | None
    job_name: str | None
    result_state: str | None
    tasks: pd.DataFrame
    failed: dict[str, Classification] = field(default_factory=dict)
    category: str = "none"
    diagnosis: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def next_step(self) -> str:
        first = next(iter(self.failed.values()), None)
        return first.next_step if first else "Nothing to do: no failed task."

    @property
    def failed_tasks(self) -> list[str]:
        return list(self.failed)

    def summary(self) -> pd.DataFrame:
        """Failed tasks with category, evidence and next step (for the notebook)."""
        import pandas as pd

        return pd.DataFrame(
            [{"task_key": k, "category": c.category, "evidence": c.evidence, "next_step": c.next_step,
              "retry_helps": c.retry_helps, "follow_up_notebook": c.notebook} for k, c in self.failed.items()],
            columns=["task_key", "category", "evidence", "next_step", "retry_helps", "follow_up_notebook"],
        )

    def timeline(self) -> pd.DataFrame:
        """The tasks that started, with their end and state (the notebook's timeline of tasks)."""
        import pandas as pd

        started = self.tasks.dropna(subset=["start"])
        if started.empty:
            return started.assign(end=started["start"], state=started["result_state"])
        return started.assign(
            end=lambda f: f["start"] + pd.to_timedelta(f["duration_s"].fillna(0), unit="s"),
            state=lambda f: f["result_state"].fillna(f["life_cycle_state"]),
        )

    def trace_tails(self, chars: int = 1500) -> dict[str, str]:
        """The end of each failed task's error trace, whole lines only (tasks without a trace left out);
        tasks that failed with the same trace share one entry, keyed by their names (``"a, b"``)."""
        traces = self.tasks.set_index("task_key")["error_trace"] if len(self.tasks) else {}
        by_tail: dict[str, list[str]] = {}
        for key in self.failed:
            if key in traces and traces[key]:
                by_tail.setdefault(tail_lines(str(traces[key]), chars), []).append(key)
        return {", ".join(keys): tail for tail, keys in by_tail.items()}


def triage(w: WorkspaceClient, job_or_run: str = "") -> Triage:
    """Find the run, read its tasks and errors, and classify every failed task.

    Args:
        w: workspace client.
        job_or_run: run id, job name, or empty for the latest failed run of any job.

    Returns:
        The triage; `run_id` None and a plain diagnosis when there is no failed run.
    """
    from retail_lakehouse.databricks.workspace import get_run

    run_id = find_run(w, job_or_run)
    if run_id is None:
        what = f"job {job_or_run!r}" if job_or_run.strip() else "any job"
        return Triage(None, None, None, task_frame({}), diagnosis=f"No failed run of {what} among the recent runs: nothing to triage.")
    run = get_run(w, run_id)
    tasks = task_frame(run)
    state = run.get("state") or {}
    failed: dict[str, Classification] = {}
    for _, t in tasks.iterrows():
        if t["result_state"] == "FAILED" or (t["life_cycle_state"] == "INTERNAL_ERROR" and t["error"]):
            failed[str(t["task_key"])] = classify("\n".join(str(x) for x in (t["error"], t["error_trace"]) if x))
    category = next(iter(failed.values())).category if failed else "none"
    name = run.get("run_name")
    result = state.get("result_state")
    if failed:
        first_key, first = next(iter(failed.items()))
        diagnosis = (
            f"Run {run_id} of {name} ended {result}: {len(failed)} task(s) failed "
            f"({', '.join(failed)}). Cause: {first.category.replace('_', ' ')} - {first.evidence or 'see the trace'}."
        )
    else:
        diagnosis = f"Run {run_id} of {name} ended {result}; no task failed."
    return Triage(run_id, name, result, tasks, failed, category, diagnosis, run)


# ----------------------------------------------------------------------------- repair


@dataclass
class RepairOutcome(Outcome):
    """What a repair did (`raise_for_status()` raises when a real repair did not fix the run).

    Attributes:
        run_id: the repaired run.
        repair_id: the repair's id (None in a dry run).
        tasks: tasks that were (or would be) rerun.
        result_state: the run's result after the repair (None in a dry run).
        held: the run succeeded after the repair (False in a dry run).
        message: one plain sentence.
        dry_run: nothing was rerun.
    """

    procedure: ClassVar[str] = "job_failure_triage"
    run_id: int
    repair_id: int | None
    tasks: list[str]
    result_state: str | None
    held: bool
    message: str
    dry_run: bool = False

    @property
    def failed(self) -> bool:
        return not self.dry_run and not self.held


def repair(
    w: WorkspaceClient,
    t: Triage,
    *,
    dry_run: bool,
    timeout: float = 900,
    poll_seconds: float = 1.0,
) -> RepairOutcome:
    """Rerun the failed tasks of a triaged run (Jobs API repair) and wait for the outcome.

    Args:
        w: workspace client.
        t: the triage (its run must have failed tasks).
        dry_run: only say what would be rerun.
        timeout: seconds to wait for the repair.
        poll_seconds: wait between polls.

    Raises:
        ParameterError: nothing to repair.
        TimeoutError: the repair did not finish in time (it keeps running).
    """
    if t.run_id is None or not t.failed:
        raise ParameterError("action", "there is no failed task to retry; run the triage without action retry")
    if dry_run:
        return RepairOutcome(t.run_id, None, t.failed_tasks, None, False,
                             f"Dry run: would rerun {', '.join(t.failed_tasks)} of run {t.run_id} (and their dependents).",
                             dry_run=True)
    response = w.jobs.repair_run(run_id=t.run_id, rerun_all_failed_tasks=True)
    # The SDK wraps the answer in a waiter (`.response`); a plain RepairRunResponse has the id itself.
    inner = response.__dict__.get("response", response)
    repair_id = getattr(inner, "repair_id", None)
    deadline = time.monotonic() + timeout
    time.sleep(min(poll_seconds, 0.5))
    while True:
        run = w.jobs.get_run(t.run_id)
        life, result = _state(run)
        if life in _TERMINAL and not any(
            _state(task)[0] not in _TERMINAL for task in run.tasks or [] if task.task_key in t.failed
        ):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"repair {repair_id} of run {t.run_id} did not finish in {timeout}s; it keeps running")
        time.sleep(poll_seconds)
    held = result == "SUCCESS"
    message = (
        f"Repair {repair_id} of run {t.run_id} reran {', '.join(t.failed_tasks)}: the run now ended {result}"
        + (" - the fix held." if held else " - the failure is not fixed; read the new error below.")
    )
    return RepairOutcome(t.run_id, repair_id, t.failed_tasks, result, held, message)
