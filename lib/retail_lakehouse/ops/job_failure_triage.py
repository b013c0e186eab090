"""Job failure triage: which run failed, which tasks, why, the runbook's next step, and a repair.

The procedure of `ops_notebooks/job_failure_triage.ipynb`: `make_request()` checks what to triage
(a Databricks job run, or a failed Airflow DAG run) before anything is touched, `run()` triages it,
repairs it with action retry and fills the audit row, and the `TriageOutcome` it returns holds what
the notebook shows, its conclusion, and `raise_for_status()`.

The Databricks run is triaged and repaired by `job_run_triage` (its tasks' errors classified by the
registry of `failure_classifiers`); the names of both are re-exported here.

A failed Airflow DAG run (`airflow_triage.triage_dag_run`) is classified through the Databricks run
its failed task launched (`diagnose_dag_run`), or through the error in Airflow's log when the
workspace does not answer; it is retried by clearing the task in Airflow, not by a repair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.ops import airflow_triage as at
from retail_lakehouse.ops.failure_classifiers import Classification, classify
from retail_lakehouse.ops.job_run_triage import (
    RepairOutcome,
    Triage,
    repair,
    target,
    triage,
)
from retail_lakehouse.ops.summary import Summary, command

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.airflow_triage import AirflowApi, DagRunTriage
    from retail_lakehouse.ops.audit import AuditRecord

__all__ = [
    "ACTIONS",
    "PARAMETERS",
    "DagRunCause",
    "TriageOutcome",
    "TriageRequest",
    "dag_run_audit",
    "dag_run_conclusion",
    "diagnose_dag_run",
    "make_request",
    "run",
    "summary_of",
]

ACTIONS = ("none", "retry")
# The notebook's parameters beyond their annotations (see core.params): every id may be empty.
PARAMETERS = Parameters(
    job_run_id=Param(required=False),
    job=Param(required=False),
    dag_id=Param(required=False),
    dag_run_id=Param(required=False),
    action=Param("choice", choices=ACTIONS),
)


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


# ----------------------------------------------------------------------------- the procedure


@dataclass(frozen=True)
class TriageRequest:
    """What to triage and what to do, checked before anything is touched (see `make_request`).

    Attributes:
        env: the lakehouse environment.
        job_or_run: the Databricks run id, job name or empty (see `find_run`); unused with `dag`.
        dag: ``(dag_id, dag_run_id)`` of a failed Airflow DAG run, or None for a Databricks run.
        action: ``none`` (triage only) or ``retry`` (repair the Databricks run's failed tasks).
        dry_run: with action retry, only say what would be rerun.
        airflow: the Airflow API client, with `dag`.
    """

    env: str
    job_or_run: str
    dag: tuple[str, str] | None = None
    action: str = "none"
    dry_run: bool = True
    airflow: AirflowApi | None = None

    @property
    def operation(self) -> str:
        """The audit row's operation."""
        return "triage:airflow" if self.dag else f"triage:{self.action}"

    @property
    def changes_nothing(self) -> bool:
        """Whether the run only reads (the audit row's dry_run)."""
        return self.action == "none" or self.dry_run


def make_request(
    *,
    env: str,
    ops_run_id: str = "",
    job_run_id: str = "",
    job: str = "",
    dag_id: str = "",
    dag_run_id: str = "",
    action: str = "none",
    dry_run: bool = True,
    confirm: bool = False,
) -> TriageRequest:
    """Check the notebook's parameters together: a DAG run or a Databricks run, and what to do.

    Args:
        env: the lakehouse environment.
        ops_run_id: this ops run's id in the incident record (the audit row keeps it; unused here).
        job_run_id: the failed Databricks job run; empty for the latest failed run of `job`.
        job: the job of the run; empty for any job.
        dag_id: the DAG of a failed DAG run; empty to triage a Databricks run.
        dag_run_id: that DAG run's id (required with `dag_id`).
        action: ``none`` or ``retry`` (not with a DAG run: Airflow retries by clearing the task).
        dry_run: with action retry, only say what would be rerun.
        confirm: required in qa/prod to really retry.

    Raises:
        ParameterError: malformed ids, a DAG run and a Databricks run at once, or retry with a DAG run.
        ConfigError: a DAG run but no Airflow API configured for the environment.
        ConfirmationRequired: a real retry in qa/prod without `confirm`.
    """
    from retail_lakehouse.ops.safety import require_confirmation

    dag = at.dag_target(dag_id, dag_run_id, job=job, job_run_id=job_run_id, action=action)
    job_or_run = target(job, job_run_id)
    airflow = at.AirflowApi.for_env(env) if dag else None  # address and credentials from the environment
    if action == "retry":
        require_confirmation(env, dry_run=dry_run, confirm=confirm, action="retrying the failed tasks")
    return TriageRequest(env, job_or_run, dag, action, dry_run, airflow)


@dataclass
class TriageOutcome:
    """What the triage found (and the repair did), for the notebook.

    Attributes:
        request: what was asked.
        triage: the Databricks run's triage (with a DAG run: of its failed task's run, when the
            workspace answered; else None).
        dag_run: the DAG run as Airflow shows it (None for a Databricks run).
        cause: why the DAG run's failed task failed (None without a DAG run or a failed task).
        repair: the repair of the failed tasks, with action retry and a failed task.
    """

    request: TriageRequest
    triage: Triage | None
    dag_run: DagRunTriage | None = None
    cause: DagRunCause | None = None
    repair: RepairOutcome | None = None

    @property
    def databricks_note(self) -> str:
        """Why there is no Databricks run to show (when `triage` is None)."""
        if self.cause is None:
            return "No failed task in the DAG run: no Databricks run to look at."
        if self.cause.databricks_run_id is None:
            return f"Task {self.cause.task_id} started no Databricks run: the failure is Airflow's side (see the conclusion)."
        return f"Databricks run {self.cause.databricks_run_id} could not be read: {self.cause.note}."

    def conclusion(self) -> list[str]:
        """The notebook's last words: diagnosis, next step, and the retry's outcome or how to resume."""
        if self.dag_run is not None:
            return dag_run_conclusion(self.dag_run, self.cause)
        t = self.triage
        assert t is not None  # a Databricks run is always triaged (`run_id` None when none failed)
        lines = [f"DIAGNOSIS ({t.category}): {t.diagnosis}", f"NEXT STEP: {t.next_step}"]
        if self.request.action == "retry":
            lines.append(f"RETRY: {self.repair.message}" if self.repair else "RETRY: nothing to retry (no failed task).")
        return lines

    def raise_for_status(self) -> None:
        """Raise when a real repair did not fix the run; a triage alone never raises.

        Raises:
            ProcedureFailedError: the repair's message, with the run it repaired.
        """
        if self.repair is not None:
            self.repair.raise_for_status()


def run(w: WorkspaceClient, request: TriageRequest, *, record: AuditRecord | None = None) -> TriageOutcome:
    """Triage the DAG run or the Databricks run, repair it with action retry, and fill the audit row.

    Args:
        w: the workspace the jobs run in.
        request: what to triage (`make_request`).
        record: the audit row (`audit.audited`): its details get the run, category and repair, and
            its outcome says FAILED when a real repair did not fix the run.

    Raises:
        AirflowApiError: Airflow is unreachable or has no such DAG run.
        TimeoutError: the repair did not finish in time (it keeps running).
    """
    details = record.details if record is not None else {}
    if request.dag is not None:
        dag_run = at.triage_dag_run(*request.dag, api=request.airflow, env=request.env)
        cause = diagnose_dag_run(dag_run, w)  # through the failed task's Databricks run
        details.update(dag_run_audit(dag_run, cause))
        return TriageOutcome(request, cause.databricks if cause else None, dag_run, cause)
    t = triage(w, request.job_or_run)
    details.update(job_run_id=t.run_id, category=t.category, failed=t.failed_tasks)
    fix = None
    if request.action == "retry" and t.failed:
        fix = repair(w, t, dry_run=request.dry_run)
        details.update(repair_id=fix.repair_id, result_state=fix.result_state, held=fix.held)
        if fix.failed and record is not None:
            record.outcome = "FAILED: the repaired run did not succeed"
    return TriageOutcome(request, t, repair=fix)


def summary_of(outcome: TriageOutcome, *, env: str) -> Summary:
    """The notebook's summary (its last cell): the failed run, its cause, the retry's outcome, what next."""
    dag_run, t, fix = outcome.dag_run, outcome.triage, outcome.repair
    if dag_run is not None:
        cause = outcome.cause
        if cause is None:
            return Summary("job_failure_triage", "NOTHING TO DO", f"DAG run {dag_run.dag_id}/{dag_run.run_id} reported",
                           f"The DAG run is {dag_run.state}; no task failed.", f"state {dag_run.state}",
                           "Nothing to do.", "Triage only; nothing changed.")
        task = next(x for x in dag_run.tasks if x.task_id == cause.task_id)
        c = cause.classification
        return Summary(
            "job_failure_triage", "DIAGNOSED",
            f"DAG run {dag_run.dag_id}/{dag_run.run_id} {dag_run.state}",
            f"{c.category.replace('_', ' ')}: task {task.task_id} failed at try {task.try_number} of "
            f"{task.tries_allowed}. "
            + c.next_step.replace("(action retry)", "(in Airflow: clear the failed task, the next step)"),
            f"{cause.source}: {c.evidence or 'see the log'}; Databricks run {cause.databricks_run_id}",
            dag_run.clear_command(task),
            "Triage only; nothing changed. Retry in Airflow (clear the task) once the cause is fixed.",
        )
    assert t is not None
    if t.run_id is None:
        return Summary("job_failure_triage", "NOTHING TO DO", "a job run reported as failed", t.diagnosis,
                       "no failed run among the recent runs", "Nothing to do.", "Triage only; nothing changed.")
    first = next(iter(t.failed.values()), None)
    symptom = f"Job {t.job_name} run {t.run_id} ended {t.result_state}"
    evidence = f"failed tasks {', '.join(t.failed_tasks) or 'none'}; {first.evidence if first else t.result_state}"
    retry = {"job_run_id": t.run_id, "action": "retry", "dry_run": False}
    confirm = {"confirm": True} if env in ("qa", "prod") else {}
    if fix is not None and not fix.dry_run:
        status = "HELD" if fix.held else "DID NOT HOLD"
        result = fix.message
        if fix.held:
            nxt = command("data_freshness", env=env)  # the retried job's tables are fresh again
        else:
            nxt = command("job_failure_triage", env=env, job_run_id=t.run_id)
    elif fix is not None:
        status, result = "DRY RUN", fix.message
        nxt = command("job_failure_triage", env=env, **retry, **confirm)
    else:
        status, result = "DIAGNOSED", "Triage only; nothing changed."
        if first is not None and first.notebook == "diagnose_oom":
            nxt = command("diagnose_oom", env=env, job_run_id=t.run_id)
        elif first is not None and first.retry_helps:
            nxt = command("job_failure_triage", env=env, job_run_id=t.run_id, action="retry")
        else:
            nxt = first.next_step if first else "Nothing to do."
    return Summary("job_failure_triage", status, symptom, f"{t.category.replace('_', ' ')}: {t.diagnosis}",
                   evidence, nxt, result)
