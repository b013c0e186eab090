"""Run a job of the bundle locally: notebooks with papermill, in dependency order, with retries.

Every task notebook of a run talks to one embedded engine (the runner starts it and exports
`SPARK_REMOTE`, which the kernels inherit). Executed notebooks are kept under
`LAKEHOUSE_HOME/runs/<run_id>/` (`<task_key>.ipynb` for a task's last attempt,
`<task_key>.attempt<N>.ipynb` for earlier failed ones) with `run.json`, the whole run; job and task
runs are recorded in the monitoring table `job_runs`. Task states follow Databricks: SUCCESS,
FAILED, UPSTREAM_FAILED (not run: an upstream task failed), EXCLUDED (run_if not met), CANCELED.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from retail_lakehouse.core.config import env_flag, lakehouse_home, load_settings
from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.databricks.bundle import Bundle, JobSpec, TaskSpec, load_bundle, param_str
from retail_lakehouse.engine import journal as monitoring
from retail_lakehouse.jobs.job_runs import JobRun, Recorder, TaskRun, row
from retail_lakehouse.jobs.kernels import KERNEL_NAME, KernelPool, closing_event_loop, kernel_cpu_seconds
from retail_lakehouse.jobs.scheduling import priorities
from retail_lakehouse.jobs.scheduling import run_if as _run_if

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["attempts", "bundle_for", "load_run", "new_run_id", "run_job", "runs_dir"]

log = logging.getLogger(__name__)

TaskState = Literal["SUCCESS", "FAILED", "UPSTREAM_FAILED", "EXCLUDED", "CANCELED"]
JobState = Literal["RUNNING", "SUCCESS", "FAILED", "CANCELED"]

DEFAULT_ATTEMPTS = 1  # as on Databricks: a task without max_retries is tried once (no retry)
DEFAULT_BACKOFF_SECONDS = 2.0
MAX_ERROR_CHARS = 2000
# Kernels warming beyond the running tasks' (each kernel runs one notebook). With only as many as run
# at once, a task of 0.2-0.5 s finished before its successor's kernel was warm: the tasks of a daily
# increment waited 0.1-0.4 s each for one. Two more: increment 5.6 -> 5.2 s, with no new data 5.5 ->
# 4.4 s (sf 1, alternated runs); peak memory of the sf 10 full load 3.1 -> 3.4-3.6 GB (budget 4 GB).
SPARE_KERNELS = 2
_RUN_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
_DYNAMIC = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


# ----------------------------------------------------------------------------- public API


def new_run_id(now: datetime | None = None) -> str:
    """A run id: UTC ``YYYYMMDDTHHMMSS-<6 hex>``."""
    return f"{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def runs_dir(env: str = "local") -> Path:
    """Folder holding one sub-folder per run."""
    settings = load_settings(env)
    return settings.local_path("runs") if settings.is_local else lakehouse_home() / "runs"


def load_run(run_id: str, env: str = "local") -> JobRun:
    """A run as its run.json describes it.

    Raises:
        ParameterError: no such run.
    """
    path = runs_dir(env) / run_id / "run.json"
    if not path.is_file():
        raise ParameterError("run_id", f"no run {run_id!r} (no {path}); list runs under {path.parent.parent}")
    return JobRun.from_dict(json.loads(path.read_text()))


def run_job(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    env: str = "local",
    run_id: str | None = None,
    max_parallel: int | None = None,
    retry_backoff_seconds: float | None = None,
    bundle: Bundle | str | Path | None = None,
    cancel: threading.Event | None = None,
    warm_kernels: bool | None = None,
    preload: Sequence[str] = (),
) -> JobRun:
    """Run a job of the bundle locally and record it.

    Args:
        name: job key or job name in the bundle.
        params: job parameter values; they override the job's defaults and, as on Databricks, the
            tasks' `base_parameters` of the same name.
        env: environment the notebooks get as parameter `env`; the bundle target of that name applies.
        run_id: run id (default: a new ``YYYYMMDDTHHMMSS-<6 hex>``).
        max_parallel: tasks run at once (default ``min(2, cpu count)``).
        retry_backoff_seconds: wait before the first retry, doubled at each next retry; overrides
            the tasks' `min_retry_interval_millis` (default: theirs, else 2 s).
        bundle: a loaded Bundle or the path of a bundle file (default `databricks.yml`).
        cancel: set it from another thread to cancel the run (running notebooks finish first).
        warm_kernels: start each task's kernel ahead, library imported and engine session open
            (default: on, unless `LAKEHOUSE_WARM_KERNELS=0`). Each kernel still runs one notebook.
        preload: modules the notebooks import, imported while a warm kernel waits for its task
            (the caller names them: e.g. `retail_lakehouse.ops.KERNEL_PRELOAD`).

    Returns:
        The run. A failed run is returned, not raised: call `raise_for_state()` to raise.

    Raises:
        JobNotFoundError: no such job (the message lists the jobs).
        ParameterError: a parameter the job does not declare, or a malformed run id.
        ConfigError: the bundle is invalid.
    """
    b = bundle_for(bundle, env)
    job = b.job(name)
    job_params = resolve_params(job, params)
    run_id = run_id or new_run_id()
    if not _RUN_ID.match(run_id):
        raise ParameterError("run_id", f"{run_id!r} may hold letters, digits, '.', '_' and '-' only")
    settings = load_settings(env)
    if warm_kernels is None:
        warm_kernels = env_flag("LAKEHOUSE_WARM_KERNELS")
    journal: Path | None = None
    replayed = monitoring.FlushResult()
    if settings.is_local:
        from retail_lakehouse import engine

        engine.start_local_server(settings)
        # Monitoring rows a killed run left are written first; this run's tasks (warm kernels) keep
        # theirs in its journal, written at the end of each job run (engine.journal).
        replayed = monitoring.replay_orphans(settings)
        journal = monitoring.open_journal(run_id, settings) if warm_kernels else None
    recorder = Recorder(env)
    parallel = max_parallel or min(2, os.cpu_count() or 1)
    # Tables are registered in a task's session when it first names them: a task reads and writes a
    # few, and registering all of them was most of an increment's round trips.
    pool = KernelPool(
        size=parallel + SPARE_KERNELS if warm_kernels else 0,
        budget=_notebook_tasks(b, job),
        preload=preload,
        lazy_tables=True,
        environ={monitoring.JOURNAL_ENV: str(journal)} if journal else None,
    )
    execution = _Execution(
        bundle=b,
        job=job,
        params=job_params,
        env=env,
        run_id=run_id,
        root=runs_dir(env),
        max_parallel=parallel,
        backoff=retry_backoff_seconds,
        recorder=recorder,
        cancel=cancel or threading.Event(),
        kernels=pool,
        journal=journal,
    )
    try:
        with pool:
            if settings.is_local:  # while the kernels warm: the session the journal and recorder write with
                engine.get_spark(env, lazy_tables=True)
            run = execution.run()
    finally:
        problems = replayed.problems + (monitoring.close_journal(journal).problems if journal else [])
        problems += recorder.close()
    from retail_lakehouse.jobs.job_alerts import notify_run

    notify_run(run)  # failed: alert job:<job>; success: resolve it (never raises, bounded wait)
    if problems or run.warnings:
        execution.result.warnings.extend(problems)
        execution.save()
    return run


def resolve_params(job: JobSpec, params: Mapping[str, Any] | None) -> dict[str, str]:
    """Job parameters: declared defaults overridden by `params`.

    Raises:
        ParameterError: a name the job does not declare.
    """
    resolved = dict(job.parameters)
    for key, value in (params or {}).items():
        if key not in job.parameters:
            known = ", ".join(job.parameters) or "none"
            raise ParameterError(key, f"job {job.key!r} has no such parameter; its parameters: {known}")
        resolved[key] = param_str(value)
    return resolved


def bundle_for(bundle: Bundle | str | Path | None, env: str) -> Bundle:
    """`bundle` loaded (a path, or `databricks.yml`) with the target named like `env` when it has one."""
    if isinstance(bundle, Bundle):
        return bundle
    b = load_bundle(bundle)
    return load_bundle(bundle, target=env) if env in b.targets and b.target != env else b


# ----------------------------------------------------------------------------- execution


class _Execution:
    """One job run (a chained job gets its own, sharing the recorder)."""

    def __init__(
        self,
        *,
        bundle: Bundle,
        job: JobSpec,
        params: dict[str, str],
        env: str,
        run_id: str,
        root: Path,
        max_parallel: int,
        backoff: float | None,
        recorder: Recorder,
        cancel: threading.Event,
        kernels: KernelPool,
        journal: Path | None = None,
    ) -> None:
        self.bundle, self.job, self.params, self.env, self.run_id = bundle, job, params, env, run_id
        self.journal = journal
        self.root, self.max_parallel, self.backoff = root, max_parallel, backoff
        self.recorder, self.cancel, self.kernels = recorder, cancel, kernels
        self.dir = root / run_id
        self.result = JobRun(
            run_id=run_id,
            job=job.key,
            job_name=job.name,
            state="RUNNING",
            start=_now(),
            end=None,
            env=env,
            parameters=dict(params),
            output_dir=str(self.dir),
        )
        self._lock = threading.Lock()

    # -- scheduling

    def run(self) -> JobRun:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()
        log.info("job %s run %s started (%s)", self.job.key, self.run_id, self.dir)
        specs = {t.task_key: t for t in self.job.topological_order()}
        rank = priorities(self.job)
        pending = list(specs)
        final: dict[str, TaskRun] = {}
        running: dict[Future[tuple[TaskRun, bool]], str] = {}
        delayed: list[tuple[float, str, int]] = []
        ready: list[tuple[str, int]] = []  # (task, attempt): started as slots free up, critical path first
        pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix=f"{self.job.key}")
        run_attempt = closing_event_loop(self._attempt)  # a worker's loop closed after each task
        try:
            while pending or running or delayed or ready:
                if self.cancel.is_set():
                    for key in pending + [k for _, k, _ in delayed] + [k for k, _ in ready]:
                        final[key] = self._not_run(specs[key], "CANCELED")
                    pending, delayed, ready = [], [], []
                self._decide(pending, specs, final, ready)
                now = time.monotonic()
                for item in [d for d in delayed if d[0] <= now]:
                    delayed.remove(item)
                    ready.append((item[1], item[2]))
                ready.sort(key=lambda item: rank[item[0]])
                while ready and len(running) < self.max_parallel:
                    key, number = ready.pop(0)
                    running[pool.submit(run_attempt, specs[key], number)] = key
                timeout = max(0.0, min(d[0] for d in delayed) - now) if delayed else None
                if not running:
                    if delayed:
                        self.cancel.wait(timeout)
                    continue
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = running.pop(fut)
                    attempt, retry = fut.result()
                    if retry:
                        delay = self._backoff(specs[key], attempt.attempt)
                        log.info("task %s attempt %d failed; retrying in %.2fs", key, attempt.attempt, delay)
                        delayed.append((time.monotonic() + delay, key, attempt.attempt + 1))
                    else:
                        final[key] = attempt
                        self.save()
        except BaseException:  # Ctrl-C or a runner bug: what has not started is CANCELED, then re-raise
            self.cancel.set()
            for key in pending + [k for _, k, _ in delayed] + [k for k, _ in ready]:
                final[key] = self._not_run(specs[key], "CANCELED")
            pool.shutdown(wait=False, cancel_futures=True)
            self._flush_journal()
            self._finish(final)
            raise
        pool.shutdown(wait=True)
        self._flush_journal()
        self._finish(final)
        return self.result

    def _flush_journal(self) -> None:
        """Write the monitoring rows this job run's tasks journaled: one commit per table."""
        if self.journal is None:
            return
        written = monitoring.flush(self.journal)
        if written.commits:
            log.info("job %s run %s: monitoring rows written %s", self.job.key, self.run_id, written.commits)
        self.result.warnings.extend(written.problems)

    def _decide(
        self,
        pending: list[str],
        specs: dict[str, TaskSpec],
        final: dict[str, TaskRun],
        ready: list[tuple[str, int]],
    ) -> None:
        """Move the pending tasks whose upstream tasks are final to `ready`, or to `final` when run_if
        skips them."""
        progress = True
        while progress:  # deciding a skipped task can make its dependents decidable
            progress = False
            for key in list(pending):
                spec = specs[key]
                if all(d in final for d in spec.depends_on):
                    pending.remove(key)
                    verdict = _run_if(spec, [final[d].state for d in spec.depends_on])
                    if verdict:
                        final[key] = self._not_run(spec, verdict)
                        progress = True
                    else:
                        ready.append((key, 1))

    def _finish(self, final: dict[str, TaskRun]) -> None:
        states = {t.state for t in final.values()}
        if self.cancel.is_set() or "CANCELED" in states:
            state = "CANCELED"
        elif states & {"FAILED", "UPSTREAM_FAILED"}:
            state = "FAILED"
        else:
            state = "SUCCESS"
        r = self.result
        r.state, r.end = state, _now()
        r.tasks.sort(key=lambda t: (t.start, t.attempt, t.task_key))
        self.recorder.add(
            row(
                r.run_id,
                r.job_name,
                None,
                None,
                state,
                r.start,
                r.end,
                None,
                None,
                r.parameters,
                r.output_dir,
                {k: c.to_dict() for k, c in self.job.clusters.items()},
            )
        )
        self.save()
        log.info("job %s run %s %s in %.1fs", self.job.key, self.run_id, state, r.duration or 0)

    def _backoff(self, spec: TaskSpec, attempt: int) -> float:
        if self.backoff is not None:
            base = self.backoff
        elif spec.min_retry_interval_millis is not None:
            base = spec.min_retry_interval_millis / 1000
        else:
            base = DEFAULT_BACKOFF_SECONDS
        return base * 2 ** (attempt - 1)

    def save(self) -> None:
        """Write run.json (atomically: readers never see half a file)."""
        with self._lock:
            tmp = self.dir / "run.json.tmp"
            tmp.write_text(json.dumps(self.result.to_dict(), indent=1))
            tmp.replace(self.dir / "run.json")

    # -- attempts

    def _attempt(self, spec: TaskSpec, attempt: int) -> tuple[TaskRun, bool]:
        """Run one attempt; return it and whether to retry. Never raises for the task's own failure."""
        start = _now()
        compute = self.job.compute(spec)
        error_class = error_message = child_id = None
        timed_out = False
        cpu_seconds: float | None = None
        if spec.run_job:
            params = self._child_params(spec)
            child_id = f"{self.run_id}.{spec.task_key}" + (f".attempt{attempt}" if attempt > 1 else "")
            output = self.root / child_id
            try:
                child = self._child(spec, params, child_id).run()
            except Exception as exc:  # a bug or an engine failure: the task fails, the run goes on
                error_class, error_message = type(exc).__name__, str(exc)
            else:
                if child.state != "SUCCESS":
                    bad = [t for t in child.outcomes.values() if t.state == "FAILED"]
                    error_class = bad[0].error_class if bad else "JobFailedError"
                    error_message = "; ".join(f"{t.task_key}: {t.error_message}" for t in bad) or child.state
            output_path = str(output)
        else:
            params = self._task_params(spec)
            output = self.dir / f"{spec.task_key}.ipynb"
            try:
                cpu_seconds = _execute(spec, params, output, self.kernels)
            except Exception as exc:
                error_class, error_message = _describe(exc)
                timed_out = isinstance(exc, TimeoutError) or "Timeout" in (error_class or "")
            output_path = str(output)
        end = _now()
        state = "FAILED" if error_class else "SUCCESS"
        retry = (
            state == "FAILED"
            and attempt < attempts(spec)
            and (spec.retry_on_timeout or not timed_out)
            and not self.cancel.is_set()
        )
        if retry and not spec.run_job and output.exists():
            kept = output.with_name(f"{spec.task_key}.attempt{attempt}.ipynb")
            output.replace(kept)
            output_path = str(kept)
        run = TaskRun(
            task_key=spec.task_key,
            attempt=attempt,
            state=state,
            start=start,
            end=end,
            duration=(end - start).total_seconds(),
            error_class=error_class,
            error_message=error_message[:MAX_ERROR_CHARS] if error_message else None,
            output_path=output_path,
            parameters=params,
            compute=compute,
            child_run_id=child_id,
            cpu_seconds=cpu_seconds,
        )
        self._add(run)
        log.info("task %s attempt %d %s in %.1fs", spec.task_key, attempt, state, run.duration)
        return run, retry

    def _not_run(self, spec: TaskSpec, state: str) -> TaskRun:
        now = _now()
        run = TaskRun(spec.task_key, 0, state, now, now, 0.0, compute=self.job.compute(spec))
        self._add(run)
        return run

    def _add(self, run: TaskRun) -> None:
        with self._lock:
            self.result.tasks.append(run)
        self.recorder.add(
            row(
                self.run_id,
                self.job.name,
                run.task_key,
                run.attempt,
                run.state,
                run.start,
                run.end,
                run.error_class,
                run.error_message,
                run.parameters,
                run.output_path,
                run.compute,
            )
        )

    def _task_params(self, spec: TaskSpec) -> dict[str, str]:
        """Databricks semantics: job parameters override base_parameters of the same name."""
        params = {k: self._dynamic(v, spec) for k, v in spec.base_parameters.items()}
        params.update(self.params)
        params.update(env=self.env, run_id=self.run_id, task_key=spec.task_key)
        return params

    def _child_params(self, spec: TaskSpec) -> dict[str, str]:
        """A chained job gets the parent's parameters it declares, then the task's job_parameters."""
        child = self.bundle.jobs[spec.run_job or ""]
        params = {k: v for k, v in self.params.items() if k in child.parameters}
        params.update({k: self._dynamic(v, spec) for k, v in spec.run_job_parameters.items()})
        return resolve_params(child, params)

    def _child(self, spec: TaskSpec, params: dict[str, str], child_id: str) -> _Execution:
        return _Execution(
            bundle=self.bundle,
            job=self.bundle.jobs[spec.run_job or ""],
            params=params,
            env=self.env,
            run_id=child_id,
            root=self.root,
            max_parallel=self.max_parallel,
            backoff=self.backoff,
            recorder=self.recorder,
            cancel=self.cancel,
            kernels=self.kernels,
            journal=self.journal,
        )

    def _dynamic(self, value: str, spec: TaskSpec) -> str:
        """Databricks dynamic value references: {{job.parameters.x}}, {{job.run_id}}, {{task.name}}, ..."""
        start = self.result.start
        known = {
            "job.run_id": self.run_id,
            "job.id": self.job.key,
            "job.name": self.job.name,
            "task.name": spec.task_key,
            "job.start_time.iso_date": start.date().isoformat(),
            "job.start_time.iso_datetime": start.isoformat(),
        }

        def one(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref.startswith("job.parameters."):
                return self.params.get(ref[len("job.parameters.") :], m.group(0))
            return known.get(ref, m.group(0))

        return _DYNAMIC.sub(one, value)


@functools.lru_cache(maxsize=256)
def _declared(path: str, mtime: float) -> frozenset[str]:  # noqa: ARG001 - mtime keys the cache
    import papermill

    return frozenset(papermill.inspect_notebook(path))


def _execute(spec: TaskSpec, params: dict[str, str], output: Path, kernels: KernelPool) -> float | None:
    """Run a notebook task; return the CPU seconds its (warm) kernel used, when known."""
    import papermill

    assert spec.notebook_path is not None
    # As on Databricks, job parameters reach every task, but a notebook only reads the widgets it
    # declares: pass only the parameters its `parameters` cell defines (no papermill warnings).
    declared = _declared(str(spec.notebook_path), spec.notebook_path.stat().st_mtime)
    # A warm kernel starts in the notebook's folder too. Not papermill's `cwd=`: it chdirs the
    # whole process, which races between tasks running in parallel threads.
    km = kernels.acquire(spec.notebook_path.parent) if kernels.size else None
    cpu = None
    try:
        papermill.execute_notebook(
            str(spec.notebook_path),
            str(output),
            parameters={k: v for k, v in params.items() if k in declared},
            kernel_name=KERNEL_NAME,
            resources={"metadata": {"path": str(spec.notebook_path.parent)}},
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,
            execution_timeout=spec.timeout_seconds,
            km=km,
        )
    finally:
        if km is not None:
            cpu = kernel_cpu_seconds(km)
            kernels.release(km)
    return cpu


def _notebook_tasks(bundle: Bundle, job: JobSpec, _seen: frozenset[str] = frozenset()) -> int:
    """Notebook tasks a run of `job` executes at most once each, chained jobs included."""
    total = 0
    for task in job.tasks:
        if task.run_job and task.run_job not in _seen and task.run_job in bundle.jobs:
            total += _notebook_tasks(bundle, bundle.jobs[task.run_job], _seen | {job.key})
        elif task.notebook_path is not None:
            total += 1
    return total


def _describe(exc: Exception) -> tuple[str, str]:
    """(error class, message) of a failed notebook: the notebook's own exception when it raised one."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return exc.ename, str(exc.evalue)
    return type(exc).__name__, str(exc) or repr(exc)


def attempts(spec: TaskSpec) -> int:
    """How many times a task runs at most (its max_retries + 1; once by default, as on Databricks)."""
    if spec.max_retries is not None and spec.max_retries >= 0:
        return spec.max_retries + 1
    # A chained job retries inside its own tasks; retrying the whole job is opt-in.
    return 1 if spec.run_job else DEFAULT_ATTEMPTS


def _now() -> datetime:
    return datetime.now(UTC)
