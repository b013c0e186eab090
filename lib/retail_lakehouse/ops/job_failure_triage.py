"""Job failure triage: which run failed, which tasks, why, the runbook's next step, and a repair.

The run is found through the workspace's jobs API (`w.jobs`), so the same code triages a local run
and a Databricks one. Failures are classified by a registry of classifiers, tried in order: each
looks at a task's error class, message and trace and says whether it recognises it. The first
match wins; `other` catches the rest. A retry is a Jobs API repair of the failed tasks
(`w.jobs.repair_run(rerun_all_failed_tasks=True)`), which keeps the original run as the record.

A failed Airflow DAG run (`airflow_triage.triage_dag_run`) is classified through the Databricks run
its failed task launched (`diagnose_dag_run`), or through the error in Airflow's log when the
workspace does not answer; it is retried by clearing the task in Airflow, not by a repair.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.errors import JobNotFoundError, ParameterError

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.airflow_triage import DagRunTriage

__all__ = [
    "CLASSIFIERS",
    "Classification",
    "DagRunCause",
    "RepairOutcome",
    "Triage",
    "classifier",
    "classify",
    "dag_run_audit",
    "dag_run_conclusion",
    "diagnose_dag_run",
    "find_run",
    "repair",
    "task_frame",
    "triage",
]

_TERMINAL = {"TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
_FAILED_STATES = {"FAILED", "TIMEDOUT", "CANCELED", "UPSTREAM_FAILED", "MAXIMUM_CONCURRENT_RUNS_REACHED"}


@dataclass(frozen=True)
class Classification:
    """What kind of failure a task hit and what the runbook says to do next.

    Attributes:
        category: out_of_memory, schema_mismatch, source_unreachable, data_quality or other (and
            orchestration: an Airflow task that started no Databricks run).
        evidence: the part of the error that decided it.
        next_step: the runbook's next step, in one or two sentences.
        retry_helps: whether a plain retry can succeed once the cause is fixed (or by itself).
        notebook: the ops notebook that continues the diagnosis, if any.
    """

    category: str
    evidence: str
    next_step: str
    retry_helps: bool
    notebook: str | None = None


Classifier = Callable[[str], "str | None"]
# name -> (matcher returning the evidence or None, next step, retry helps, follow-up notebook)
CLASSIFIERS: dict[str, tuple[Classifier, str, bool, str | None]] = {}


def classifier(
    name: str, *, next_step: str, retry_helps: bool, notebook: str | None = None
) -> Callable[[Classifier], Classifier]:
    """Register a failure classifier (tried in registration order; `other` is the fallback)."""

    def decorator(fn: Classifier) -> Classifier:
        CLASSIFIERS[name] = (fn, next_step, retry_helps, notebook)
        return fn

    return decorator


def _first(patterns: list[str], text: str) -> str | None:
    for pattern in patterns:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            start = max(0, m.start() - 60)
            return text[start : m.end() + 120].strip().splitlines()[0][:240] if text else None
    return None


@classifier(
    "out_of_memory",
    next_step="Run diagnose_oom for this run: it tells driver from executor OOM, skew and collect-to-driver, "
    "and sizes the remedy. A plain retry on the same cluster fails the same way.",
    retry_helps=False,
    notebook="diagnose_oom",
)
def _oom(text: str) -> str | None:
    return _first(
        [
            r"\bMemoryError\b",
            r"OutOfMemoryError",
            r"java heap space",
            r"GC overhead limit exceeded",
            r"exceeding memory limits",
            r"Container killed .*memory",
            r"exit code 137",
            r"Cannot allocate memory",
            r"std::bad_alloc",
            r"driver .*out of memory",
        ],
        text,
    )


@classifier(
    "schema_mismatch",
    next_step="Compare the source's columns with bronze and silver (schema_evolution notebook), evolve the "
    "table as the runbook describes, then retry the failed tasks.",
    retry_helps=False,
    notebook="schema_evolution",
)
def _schema(text: str) -> str | None:
    return _first(
        [
            r"SchemaMismatchError",
            r"schema mismatch",
            r"DELTA_FAILED_TO_MERGE_FIELDS",
            r"UNRESOLVED_COLUMN",
            r"cannot resolve",
            r"column .* does not exist",
            r"cannot cast",
        ],
        text,
    )


@classifier(
    "source_unreachable",
    next_step="Check the source system (database up, credentials, network, landing folder present); "
    "bronze was not changed. When the source answers again, retry the failed tasks (action retry).",
    retry_helps=True,
)
def _source(text: str) -> str | None:
    return _first(
        [
            r"SourceError",
            r"unreachable",
            r"Connection refused",
            r"could not connect",
            r"timed out",
            r"No such file or directory",
            r"FileNotFoundError",
            r"unable to open database",
            r"could not be read",
        ],
        text,
    )


@classifier(
    "data_quality",
    next_step="Run quality_failure_triage for the table and date: it shows the failed checks, the "
    "quarantined rows and the run that produced them. Fix the data or the rule, then rerun the checks.",
    retry_helps=False,
    notebook="quality_failure_triage",
)
def _quality(text: str) -> str | None:
    return _first([r"CheckFailedError", r"quality check", r"check .* FAILED", r"expectation"], text)


_OTHER = Classification(
    "other",
    "",
    "Read the error trace and the executed notebook of the failed task. A transient error (a lost "
    "node, a throttled API) usually passes on retry; anything else needs a code or data fix first.",
    True,
)


def classify(error: str | None) -> Classification:
    """Classify a task's error text (error class, message and trace together).

    Args:
        error: the error output; None or empty gives `other`.

    Returns:
        The first registered classifier that recognises it, else `other`.
    """
    text = error or ""
    for name, (fn, next_step, retry_helps, notebook) in CLASSIFIERS.items():
        evidence = fn(text)
        if evidence:
            return Classification(name, evidence, next_step, retry_helps, notebook)
    return Classification(_OTHER.category, text.strip().splitlines()[0][:240] if text.strip() else "",
                          _OTHER.next_step, _OTHER.retry_helps)


# ----------------------------------------------------------------------------- finding the run

_JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .\-]{0,99}$")


def target(job: str, run_id: str) -> str:
    """Validate the notebook's `job` / `run_id` pair; return what `find_run` takes.

    Raises:
        ParameterError: a run id that is not a number, or a job name with characters job names do not have.
    """
    run_text, job_text = str(run_id or "").strip(), str(job or "").strip()
    if run_text and run_text.lower() != "manual":
        if not run_text.isdigit():
            raise ParameterError("run_id", f"{run_text!r} is not a run id; use the number from the run's page, "
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
class RepairOutcome:
    """What a repair did.

    Attributes:
        run_id: the repaired run.
        repair_id: the repair's id (None in a dry run).
        tasks: tasks that were (or would be) rerun.
        result_state: the run's result after the repair (None in a dry run).
        held: the run succeeded after the repair.
        message: one plain sentence.
    """

    run_id: int
    repair_id: int | None
    tasks: list[str]
    result_state: str | None
    held: bool
    message: str


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
                             f"Dry run: would rerun {', '.join(t.failed_tasks)} of run {t.run_id} (and their dependents).")
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


# ----------------------------------------------------------------------------- a failed Airflow DAG run


@dataclass
class DagRunCause:
    """Why the DAG run's failed task failed, and what to do about it.

    Attributes:
        task_id: the failed task.
        databricks_run_id: the Databricks run of its last try (None: no job was started).
        classification: the category, evidence and next step (as for a Databricks job failure).
        source: where the classification comes from: ``databricks run`` (the workspace's view
            of the run), ``airflow log`` (the error Airflow logged) or ``airflow`` (no job started).
        databricks: the Databricks run's triage, when the workspace answered.
        note: why the workspace's view is missing, if it is.
    """

    task_id: str
    databricks_run_id: int | None
    classification: Classification
    source: str
    databricks: Triage | None = None
    note: str = ""

    @property
    def category(self) -> str:
        return self.classification.category


def _before_the_job(env: str) -> str:
    return (f"The task failed before its Databricks job started: check the Airflow connection databricks_{env} "
            "(host, token) and that the workspace answers and has the job (the DAG names it), then clear the task.")


def diagnose_dag_run(t: DagRunTriage, w: WorkspaceClient | None = None) -> DagRunCause | None:
    """Classify the failure of the DAG run's failed task, through its Databricks run when possible.

    Args:
        t: the DAG run's triage.
        w: the workspace the DAG's jobs run in; None (or a workspace that does not answer) falls
            back to the error in Airflow's log.

    Returns:
        The cause, or None when no task failed.
    """
    task = t.failed_task
    if task is None:
        return None
    env = task.env
    if task.databricks_run_id is None:
        text = task.error or ""
        evidence = text.strip().splitlines()[0][:240] if text.strip() else ""
        return DagRunCause(task.task_id, None, Classification("orchestration", evidence, _before_the_job(env), True), "airflow")
    note = ""
    if w is not None:
        try:
            db = triage(w, str(task.databricks_run_id))
        except Exception as exc:  # noqa: BLE001 - an unreachable workspace falls back to Airflow's log
            note = f"the workspace did not answer for run {task.databricks_run_id} ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            if db.failed:
                return DagRunCause(task.task_id, task.databricks_run_id, next(iter(db.failed.values())), "databricks run", db)
            note = f"Databricks run {task.databricks_run_id} shows no failed task ({db.result_state})"
    else:
        note = "no workspace to read the Databricks run from"
    return DagRunCause(task.task_id, task.databricks_run_id, classify(task.error), "airflow log", None, note)


def dag_run_conclusion(t: DagRunTriage, cause: DagRunCause | None) -> list[str]:
    """The notebook's last words: diagnosis, next step, then how to resume the DAG run."""
    if cause is None:
        return [f"DIAGNOSIS (none): DAG run {t.dag_id}/{t.run_id} is {t.state}; no task failed.",
                "NEXT STEP: Nothing to do."]
    task = next(x for x in t.tasks if x.task_id == cause.task_id)
    c = cause.classification
    db = (f"its Databricks run {cause.databricks_run_id}" if cause.databricks_run_id is not None
          else "no Databricks run (the job never started)")
    lines = [
        f"DIAGNOSIS ({c.category}): DAG run {t.dag_id}/{t.run_id} {t.state}: task {task.task_id} failed at try "
        f"{task.try_number} of {task.tries_allowed}; {db}. Cause ({cause.source}): "
        f"{c.category.replace('_', ' ')} - {c.evidence or 'see the log'}.",
        f"NEXT STEP: {c.next_step}",
    ]
    if cause.note:
        lines.append(f"NOTE: {cause.note}; the classification above reads Airflow's log instead.")
    if cause.databricks_run_id is not None:
        lines.append(f"DATABRICKS SIDE: {task.diagnosis}")
    when = "once the cause is fixed" if not c.retry_helps else "when the cause has passed"
    lines.append(f"RETRY ({when}): in Airflow, not by repairing the Databricks run: clear the failed task, and "
                 f"the same DAG run resumes with a new Databricks run and then its downstream DAGs: {t.clear_command(task)}")
    return lines


def dag_run_audit(t: DagRunTriage, cause: DagRunCause | None) -> dict[str, Any]:
    """What the audit row keeps of a DAG run triage."""
    task = t.failed_task
    return {
        "dag_id": t.dag_id,
        "dag_run_id": t.run_id,
        "dag_run_state": t.state,
        "failed_task": task.task_id if task else None,
        "try_number": task.try_number if task else None,
        "databricks_run_id": cause.databricks_run_id if cause else None,
        "category": cause.category if cause else "none",
    }
