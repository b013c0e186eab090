"""Job and task runs: the model the runner keeps in run.json (`JobRun`, `TaskRun`) and their
records in the monitoring table `job_runs` (what ops notebooks read).

The runner adds one row per task attempt and one per job run; a background thread appends a job
run's rows in one Delta commit when its own row (written last, when the run ends) arrives: one commit
per job run instead of one per task, recording never delays a task, and a runner killed mid-run leaves
no half-recorded run in the table (run.json still shows how far it got).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from retail_lakehouse.core.errors import JobFailedError, TaskNotFoundError

__all__ = ["JOB_RUNS_SCHEMA", "JobRun", "Recorder", "TaskRun", "row", "stable_id", "workspace_run_id"]

log = logging.getLogger(__name__)

JOB_RUNS_SCHEMA = (
    "run_id string, job_name string, task_key string, attempt int, state string, start_time timestamp, "
    "end_time timestamp, duration_seconds double, error_class string, error_message string, "
    "parameters string, output_path string, compute string, recorded_at timestamp"
)


def stable_id(text: str) -> int:
    """A positive integer id derived from a string (stable across restarts; < 2**52, JSON-safe)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:13], 16) or 1


def workspace_run_id(local_run_id: str) -> int:
    """The run id the Jobs API (the local workspace) gives the local run `local_run_id`."""
    return stable_id(f"run:{local_run_id}")


@dataclass
class TaskRun:
    """One attempt of a task (attempt 0: the task was not run, see `state`).

    Attributes:
        task_key: the task.
        attempt: 1, 2, ... (0 when not run).
        state: SUCCESS, FAILED, UPSTREAM_FAILED, EXCLUDED or CANCELED.
        start: when the attempt started (UTC).
        end: when it ended (UTC).
        duration: seconds.
        error_class: exception class raised in the notebook (e.g. ``ValueError``), else None.
        error_message: its message, at most 2,000 characters.
        output_path: the executed notebook (a run-job task: the child run's folder).
        parameters: the notebook parameters passed.
        compute: the cluster the task is declared on (JSON-ready).
        child_run_id: run id of the job a run-job task ran.
        cpu_seconds: CPU time of the task's warm kernel, start-up included (None when unknown: a
            cold kernel, a failed attempt, a run-job task).
    """

    task_key: str
    attempt: int
    state: str
    start: datetime
    end: datetime
    duration: float
    error_class: str | None = None
    error_message: str | None = None
    output_path: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    child_run_id: str | None = None
    cpu_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskRun:
        d = dict(d)
        d["start"], d["end"] = datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"])
        return cls(**d)


@dataclass
class JobRun:
    """One run of a job.

    Attributes:
        run_id: ``YYYYMMDDTHHMMSS-<6 hex>`` (a chained job: ``<parent run id>.<task_key>``).
        job: job key in the bundle.
        job_name: the job's `name`.
        state: SUCCESS, FAILED or CANCELED (RUNNING while in progress, in run.json only).
        start: start (UTC).
        end: end (UTC; None while running).
        env: environment the notebooks ran against.
        parameters: job parameters after defaults and overrides.
        tasks: every task attempt, in start order.
        output_dir: folder of the executed notebooks and run.json.
        warnings: problems that did not fail the run (e.g. recording to job_runs failed).
    """

    run_id: str
    job: str
    job_name: str
    state: str
    start: datetime
    end: datetime | None
    env: str
    parameters: dict[str, str]
    tasks: list[TaskRun] = field(default_factory=list)
    output_dir: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.end else None

    def attempts(self, task_key: str) -> list[TaskRun]:
        """Every attempt of a task, first to last."""
        return sorted((t for t in self.tasks if t.task_key == task_key), key=lambda t: t.attempt)

    def task(self, task_key: str) -> TaskRun:
        """The last attempt of a task (its outcome).

        Raises:
            TaskNotFoundError: the task did not run in this run.
        """
        runs = self.attempts(task_key)
        if not runs:
            raise TaskNotFoundError(
                f"run {self.run_id} has no task {task_key!r}; tasks: {sorted({t.task_key for t in self.tasks})}"
            )
        return runs[-1]

    @property
    def outcomes(self) -> dict[str, TaskRun]:
        """Task key -> last attempt."""
        return {key: self.task(key) for key in dict.fromkeys(t.task_key for t in self.tasks)}

    def raise_for_state(self) -> None:
        """Raise if the run did not succeed.

        Raises:
            JobFailedError: the run FAILED or was CANCELED; the message names each failed task, its
                error and its executed notebook.
        """
        if self.state == "SUCCESS":
            return
        failed = [t for t in self.outcomes.values() if t.state == "FAILED"]
        lines = [
            f"  {t.task_key} (attempt {t.attempt}): {t.error_class}: {t.error_message}\n    notebook: {t.output_path}"
            for t in failed
        ]
        skipped = [t.task_key for t in self.outcomes.values() if t.state in ("UPSTREAM_FAILED", "CANCELED")]
        if skipped:
            lines.append(f"  not run: {', '.join(skipped)}")
        raise JobFailedError(
            f"job {self.job} run {self.run_id} {self.state}:\n"
            + "\n".join(lines)
            + f"\n  run folder: {self.output_dir}",
            run_id=self.run_id,
            failed_tasks=[t.task_key for t in failed],
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "tasks"}
        d["start"] = self.start.isoformat()
        d["end"] = self.end.isoformat() if self.end else None
        d["tasks"] = [t.to_dict() for t in self.tasks]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRun:
        d = dict(d)
        d["start"] = datetime.fromisoformat(d["start"])
        d["end"] = datetime.fromisoformat(d["end"]) if d.get("end") else None
        d["tasks"] = [TaskRun.from_dict(t) for t in d.get("tasks", [])]
        return cls(**d)


def row(
    run_id: str,
    job_name: str,
    task_key: str | None,
    attempt: int | None,
    state: str,
    start: datetime,
    end: datetime | None,
    error_class: str | None,
    error_message: str | None,
    parameters: dict[str, str],
    output_path: str | None,
    compute: dict[str, Any],
) -> tuple[Any, ...]:
    """One job_runs row (without `recorded_at`, which the recorder adds)."""
    duration = (end - start).total_seconds() if end else None
    return (
        run_id,
        job_name,
        task_key,
        attempt,
        state,
        start,
        end,
        duration,
        error_class,
        error_message,
        json.dumps(parameters, sort_keys=True),
        output_path,
        json.dumps(compute, sort_keys=True),
    )


class Recorder:
    """Appends the job_runs rows of one top-level run (its tasks, its chained job runs and itself) in
    one Delta commit when it ends (`close`), so recording never delays tasks. A runner killed before the end records nothing in job_runs (its run.json
    files stay): never part of a run. Before, each chained job run made its own commit (4 per daily
    increment).

    A failed write is logged and kept as a warning of the run; it never replaces a task's error.
    """

    def __init__(self, env: str) -> None:
        self.env = env
        self.problems: list[str] = []
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def add(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._rows.append(row)

    def close(self) -> list[str]:
        """Write the run's rows (one commit), and return the recording problems."""
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            self._write(rows)
        return self.problems

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            from retail_lakehouse import engine
            from retail_lakehouse.engine import writes

            spark = engine.get_spark(self.env, lazy_tables=True)  # the runner names a few tables
            recorded = datetime.now(UTC)
            df = spark.createDataFrame([(*r, recorded) for r in rows], JOB_RUNS_SCHEMA)
            writes.write_table(df, "monitoring.job_runs", mode="append", env=self.env)
        except (Exception, SystemExit) as exc:  # pyspark may sys.exit() on import; keep the thread alive
            problem = (
                f"could not record {len(rows)} row(s) in job_runs: {type(exc).__name__}: {str(exc)[:500]}"
            )
            log.warning(problem)
            self.problems.append(problem)
