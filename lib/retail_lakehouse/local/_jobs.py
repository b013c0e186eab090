"""Jobs API 2.1/2.2 and clusters API of the local workspace, on the local job runner.

Jobs of the bundle are registered at start with stable ids; jobs created through the API are kept
in `LAKEHOUSE_HOME/workspace/jobs.json`. A run-now runs `runner.run_job` in a background thread;
the state of every run is read back from its run.json, so runs started by `lakehouse run` are
listed too. A repair reruns the chosen tasks (and their dependents) as the local run
`<run id>.repair<N>`; the run then shows each task's latest outcome and a repair history.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from databricks.sdk.service import compute as dbcompute
from databricks.sdk.service import jobs as dbjobs

from retail_lakehouse.core.errors import JobNotFoundError, ParameterError
from retail_lakehouse.databricks import bundle as bundle_mod
from retail_lakehouse.databricks.job_settings import settings_of
from retail_lakehouse.jobs import runner
from retail_lakehouse.jobs.kernels import closing_event_loop, import_notebook_machinery
from retail_lakehouse.local import _runs
from retail_lakehouse.local._common import (
    LOCAL_USER,
    ApiError,
    as_bool,
    as_int,
    invalid,
    ms,
    now_ms,
    page_offset,
    paginate,
)
from retail_lakehouse.local._run_states import (
    downstream,
    job_state,
    normalized_settings,
    notebook_output,
    repair_history,
    restricted,
    run_status,
    task_spec,
    task_state,
    task_view,
    with_notebook_params,
)
from retail_lakehouse.ops import KERNEL_PRELOAD

if TYPE_CHECKING:
    from collections.abc import Callable

    from retail_lakehouse.databricks.bundle import Bundle, JobSpec
    from retail_lakehouse.jobs.job_runs import JobRun, TaskRun

MAX_OUTPUT_CHARS = 5000


@dataclasses.dataclass
class _Job:
    job_id: int
    key: str
    spec: JobSpec
    settings: dict[str, Any]
    created_time: int


@dataclasses.dataclass
class _Launch:
    local_id: str
    key: str
    thread: threading.Thread
    cancel: threading.Event
    submitted_ms: int
    error: str | None = None


class JobsService:
    """Jobs, runs and job clusters of one local workspace."""

    def __init__(
        self, *, home: Path, env: str, bundle_path: Path | None, resolve_notebook: Callable[[str], Path | None]
    ) -> None:
        self.env = env
        self.state_path = home / "workspace" / "jobs.json"
        self.resolve_notebook = resolve_notebook
        self._lock = threading.RLock()
        self.base = runner.bundle_for(bundle_path, env)
        self.jobs: dict[int, _Job] = {}
        self.submits: dict[str, JobSpec] = {}
        self.launches: dict[str, _Launch] = {}
        self._persisted: dict[str, Any] = {"created": {}, "reset": {}, "deleted": [], "submits": {}}
        started = now_ms()
        for key, spec in self.base.jobs.items():
            job_id = _runs.job_id_for(key)
            assert job_id is not None
            self.jobs[job_id] = _Job(job_id, key, spec, settings_of(spec, self._key_to_id), started)
        self._load()

    # ------------------------------------------------------------------------- state

    def _key_to_id(self, key: str) -> int | None:
        return _runs.job_id_for(key)

    def _load(self) -> None:
        if not self.state_path.is_file():
            return
        try:
            saved = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        for job_id in saved.get("deleted", []):
            self.jobs.pop(int(job_id), None)
        for job_id, settings in saved.get("reset", {}).items():
            job = self.jobs.get(int(job_id))
            if job:
                job.spec, job.settings = self._spec(job.key, settings), settings
        for job_id, item in saved.get("created", {}).items():
            key = f"{_runs.API_JOB_PREFIX}{job_id}"
            try:
                spec = self._spec(key, item["settings"])
            except ApiError:
                continue  # a notebook it names is gone
            self.jobs[int(job_id)] = _Job(int(job_id), key, spec, item["settings"], item["created_time"])
        for key, settings in saved.get("submits", {}).items():
            try:
                self.submits[key] = self._spec(key, settings)
            except ApiError:
                continue
        self._persisted = saved

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._persisted, indent=1))
        tmp.replace(self.state_path)

    def _bundle(self) -> Bundle:
        jobs = {j.key: j.spec for j in self.jobs.values()}
        jobs.update(self.submits)
        return dataclasses.replace(self.base, jobs=jobs)

    def _spec(self, key: str, settings: dict[str, Any]) -> JobSpec:
        """Jobs API settings -> the runner's JobSpec (validated as a bundle job is)."""
        raw = json.loads(json.dumps(settings))
        clusters = list(raw.get("job_clusters") or [])
        for t in raw.get("tasks") or []:
            if "new_cluster" in t:  # a task's own cluster: a job cluster of its own locally
                clusters.append({"job_cluster_key": f"{t['task_key']}_cluster", "new_cluster": t.pop("new_cluster")})
                t["job_cluster_key"] = f"{t['task_key']}_cluster"
            nt = t.get("notebook_task")
            if isinstance(nt, dict) and nt.get("notebook_path"):
                local = self.resolve_notebook(str(nt["notebook_path"]))
                if local is None:
                    raise invalid(
                        f"task {t.get('task_key')!r}: notebook {nt['notebook_path']!r} does not exist "
                        "(a local .ipynb path or a notebook imported into the workspace)"
                    )
                nt["notebook_path"] = str(local)
            rt = t.get("run_job_task")
            if isinstance(rt, dict) and "job_id" in rt:
                target = self.jobs.get(as_int(rt["job_id"], "run_job_task.job_id"))
                if target is None:
                    raise invalid(f"task {t.get('task_key')!r}: run_job_task.job_id {rt['job_id']} does not exist")
                rt["job_id"] = f"${{resources.jobs.{target.key}.id}}"
        raw["job_clusters"] = clusters
        problems: list[str] = []
        spec = bundle_mod._job(key, raw, problems)
        if problems:
            raise invalid("; ".join(problems))
        return spec

    # ------------------------------------------------------------------------- jobs

    def _job(self, job_id: Any) -> _Job:
        jid = as_int(job_id, "job_id")
        with self._lock:
            job = self.jobs.get(jid)
        if job is None:
            raise invalid(f"Job {jid} does not exist.")
        return job

    def list_jobs(self, q: dict[str, Any]) -> dict[str, Any]:
        limit = as_int(q.get("limit"), "limit", 20)
        if not 0 < limit <= 100:
            raise invalid("limit must be between 1 and 100")
        offset = page_offset(q.get("page_token"), q.get("offset"))
        expand = as_bool(q.get("expand_tasks", False))
        name = q.get("name")
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: (-j.created_time, j.settings.get("name", ""), j.job_id))
        if name:
            jobs = [j for j in jobs if str(j.settings.get("name", "")).lower() == str(name).lower()]
        page, token = paginate(jobs, limit=limit, offset=offset)
        out = []
        for j in page:
            settings = dict(j.settings)
            if not expand:
                settings.pop("tasks", None)
                settings.pop("job_clusters", None)
            out.append(
                dbjobs.BaseJob(
                    job_id=j.job_id,
                    created_time=j.created_time,
                    creator_user_name=LOCAL_USER,
                    settings=dbjobs.JobSettings.from_dict(settings),
                )
            )
        return dbjobs.ListJobsResponse(jobs=out, has_more=token is not None, next_page_token=token).as_dict()

    def get_job(self, q: dict[str, Any]) -> dict[str, Any]:
        j = self._job(q.get("job_id"))
        return dbjobs.Job(
            job_id=j.job_id,
            created_time=j.created_time,
            creator_user_name=LOCAL_USER,
            run_as_user_name=LOCAL_USER,
            settings=dbjobs.JobSettings.from_dict(j.settings),
        ).as_dict()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        settings = normalized_settings(body)
        job_id = _runs.stable_id(f"api-job:{uuid.uuid4()}")
        key = f"{_runs.API_JOB_PREFIX}{job_id}"
        with self._lock:
            spec = self._spec(key, settings)
            created = now_ms()
            self.jobs[job_id] = _Job(job_id, key, spec, settings, created)
            self._persisted["created"][str(job_id)] = {"settings": settings, "created_time": created}
            self._save()
        return dbjobs.CreateResponse(job_id=job_id).as_dict()

    def reset(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job(body.get("job_id"))
        if not isinstance(body.get("new_settings"), dict):
            raise invalid("new_settings is required")
        settings = normalized_settings(body["new_settings"])
        with self._lock:
            job.spec, job.settings = self._spec(job.key, settings), settings
            if str(job.job_id) in self._persisted["created"]:
                self._persisted["created"][str(job.job_id)]["settings"] = settings
            else:
                self._persisted["reset"][str(job.job_id)] = settings
            self._save()
        return {}

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job(body.get("job_id"))
        with self._lock:
            self.jobs.pop(job.job_id, None)
            if self._persisted["created"].pop(str(job.job_id), None) is None:
                self._persisted["deleted"].append(job.job_id)
            self._persisted["reset"].pop(str(job.job_id), None)
            self._save()
        return {}

    # ------------------------------------------------------------------------- launching runs

    def run_now(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job(body.get("job_id"))
        params = {str(k): bundle_mod.param_str(v) for k, v in (body.get("job_parameters") or {}).items()}
        spec = with_notebook_params(job.spec, body.get("notebook_params"))
        local_id = runner.new_run_id()
        self._launch(job.key, spec, params, local_id)
        run_id = _runs.run_id_for(local_id)
        return dbjobs.RunNowResponse(run_id=run_id, number_in_job=run_id).as_dict()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("tasks"):
            raise invalid("tasks is required")
        local_id = runner.new_run_id()
        key = f"{_runs.SUBMIT_PREFIX}{local_id.replace('-', '_')}"
        settings = {
            "name": body.get("run_name") or "Untitled",
            "tasks": body["tasks"],
            "job_clusters": body.get("job_clusters") or [],
        }
        with self._lock:
            spec = self._spec(key, settings)
            self.submits[key] = spec
            self._persisted["submits"][key] = settings
            self._save()
        self._launch(key, spec, {}, local_id)
        return dbjobs.SubmitRunResponse(run_id=_runs.run_id_for(local_id)).as_dict()

    def _launch(self, key: str, spec: JobSpec, params: dict[str, str], local_id: str) -> None:
        try:
            resolved = runner.resolve_params(spec, params)
        except ParameterError as exc:
            raise invalid(str(exc)) from None
        b = self._bundle()
        b = dataclasses.replace(b, jobs={**b.jobs, key: spec})
        cancel = threading.Event()
        import_notebook_machinery()  # not first in the run's own threads (see kernels)

        def target() -> None:
            try:
                runner.run_job(
                    key, resolved, env=self.env, run_id=local_id, bundle=b, cancel=cancel, preload=KERNEL_PRELOAD
                )
            except Exception as exc:  # reported as INTERNAL_ERROR of the run, never kills the server
                launch.error = f"{type(exc).__name__}: {exc}"

        # The run's own thread may shut spare kernels down (jupyter_client's loop): closed as it ends.
        thread = threading.Thread(target=closing_event_loop(target), name=f"job-run-{local_id}", daemon=True)
        launch = _Launch(local_id, key, thread, cancel, now_ms())
        with self._lock:
            self.launches[local_id] = launch
        thread.start()

    def cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        base = self._base_local_id(body.get("run_id"))
        with self._lock:
            ids = [base] + [lid for lid in self.launches if _runs.base_local_id(lid) == base]
            launches = [self.launches[i] for i in ids if i in self.launches]
        active = [la for la in launches if la.thread.is_alive()]
        if not launches:
            run = _runs.load_runs(self.env).get(base)
            if run is not None and run.state == "RUNNING":
                raise invalid(f"run {body.get('run_id')} was not started by this workspace; cancel it where it runs")
        for la in active:
            la.cancel.set()
        return {}

    def repair(self, body: dict[str, Any]) -> dict[str, Any]:
        base = self._base_local_id(body.get("run_id"))
        view = self._state(base)
        if view["running"]:
            raise ApiError(400, "INVALID_STATE", f"run {body.get('run_id')} is still running; repair it when it ends")
        spec: JobSpec | None = view["spec"]
        if spec is None:
            raise invalid(f"the job of run {body.get('run_id')} no longer exists; it cannot be repaired")
        outcomes: dict[str, TaskRun] = view["outcomes"]
        if as_bool(body.get("rerun_all_failed_tasks", False)):
            chosen = {k for k, t in outcomes.items() if t.state in ("FAILED", "UPSTREAM_FAILED", "CANCELED")}
            dependents = True
        else:
            chosen = set(body.get("rerun_tasks") or [])
            dependents = as_bool(body.get("rerun_dependent_tasks", False))
        unknown = chosen - {t.task_key for t in spec.tasks}
        if unknown:
            raise invalid(f"rerun_tasks {sorted(unknown)} are not tasks of the job; tasks: {[t.task_key for t in spec.tasks]}")
        if not chosen:
            raise invalid("nothing to repair: pass rerun_tasks or rerun_all_failed_tasks (no task failed)")
        if dependents:
            chosen |= downstream(spec, chosen)
        sub = restricted(spec, chosen)
        sub = with_notebook_params(sub, body.get("notebook_params"))
        run = view["base"]
        params = dict(run.parameters) if run else {}
        params.update({str(k): bundle_mod.param_str(v) for k, v in (body.get("job_parameters") or {}).items()})
        n = len(view["repairs"]) + 1
        local_id = f"{base}.repair{n}"
        self._launch(spec.key, sub, params, local_id)
        return dbjobs.RepairRunResponse(repair_id=_runs.run_id_for(local_id)).as_dict()

    # ------------------------------------------------------------------------- reading runs

    def _all_local_ids(self) -> tuple[dict[str, JobRun], list[str]]:
        runs = _runs.load_runs(self.env)
        with self._lock:
            ids = set(runs) | set(self.launches)
        return runs, sorted(ids)

    def _base_local_id(self, run_id: Any) -> str:
        rid = as_int(run_id, "run_id")
        _, ids = self._all_local_ids()
        for lid in ids:
            if _runs.run_id_for(lid) == rid:
                return _runs.base_local_id(lid)
        raise invalid(f"Run {rid} does not exist.")

    def _spec_of(self, key: str) -> JobSpec | None:
        with self._lock:
            if key in self.submits:
                return self.submits[key]
            for j in self.jobs.values():
                if j.key == key:
                    return j.spec
        return self.base.jobs.get(key)

    def _state(self, base: str) -> dict[str, Any]:
        """A run with its repairs: runs, latest outcome per task, whether anything still runs."""
        runs, ids = self._all_local_ids()
        repairs = sorted(
            (lid for lid in ids if _runs.REPAIR.match(lid) and _runs.base_local_id(lid) == base),
            key=lambda lid: int(_runs.REPAIR.match(lid).group("n")),  # type: ignore[union-attr]
        )
        chain = [base, *repairs]
        with self._lock:
            launches = {lid: self.launches.get(lid) for lid in chain}
        running = False
        errors = []
        for lid in chain:
            la = launches.get(lid)
            run = runs.get(lid)
            if la is not None and la.thread.is_alive() or la is None and run is not None and run.state == "RUNNING":
                running = True
            if la is not None and la.error:
                errors.append(la.error)
        outcomes: dict[str, TaskRun] = {}
        where: dict[str, str] = {}
        for lid in chain:
            run = runs.get(lid)
            if run is None:
                continue
            for key, t in run.outcomes.items():
                outcomes[key], where[key] = t, lid
        base_run = runs.get(base)
        key = base_run.job if base_run else (launches[base].key if launches.get(base) else "")
        return {
            "base": base_run,
            "runs": {lid: runs.get(lid) for lid in chain},
            "repairs": repairs,
            "outcomes": outcomes,
            "where": where,
            "running": running,
            "errors": errors,
            "spec": self._spec_of(key),
            "key": key,
            "launch": launches.get(base),
        }

    def get_run(self, q: dict[str, Any]) -> dict[str, Any]:
        base = self._base_local_id(q.get("run_id"))
        return self._run_view(base, expand=True).as_dict()

    def list_runs(self, q: dict[str, Any]) -> dict[str, Any]:
        limit = as_int(q.get("limit"), "limit", 20)
        if not 0 < limit <= 100:
            raise invalid("limit must be between 1 and 100")
        offset = page_offset(q.get("page_token"), q.get("offset"))
        job_id = as_int(q.get("job_id"), "job_id", 0) or None
        _, ids = self._all_local_ids()
        views = [self._run_view(lid, expand=as_bool(q.get("expand_tasks", False))) for lid in ids if not _runs.REPAIR.match(lid)]
        if job_id is not None:
            views = [v for v in views if v.job_id == job_id]
        if as_bool(q.get("active_only", False)):
            views = [v for v in views if v.state.life_cycle_state != dbjobs.RunLifeCycleState.TERMINATED]
        if as_bool(q.get("completed_only", False)):
            views = [v for v in views if v.state.life_cycle_state == dbjobs.RunLifeCycleState.TERMINATED]
        if q.get("start_time_from"):
            views = [v for v in views if (v.start_time or 0) >= int(q["start_time_from"])]
        if q.get("start_time_to"):
            views = [v for v in views if (v.start_time or 0) <= int(q["start_time_to"])]
        views.sort(key=lambda v: (v.start_time or 0, v.run_id or 0), reverse=True)
        page, token = paginate(views, limit=limit, offset=offset)
        runs = [dbjobs.BaseRun.from_dict(v.as_dict()) for v in page]
        return dbjobs.ListRunsResponse(runs=runs, has_more=token is not None, next_page_token=token).as_dict()

    def _run_view(self, base: str, *, expand: bool) -> dbjobs.Run:
        s = self._state(base)
        spec: JobSpec | None = s["spec"]
        run: JobRun | None = s["base"]
        outcomes: dict[str, TaskRun] = s["outcomes"]
        job_id = _runs.job_id_for(s["key"]) if s["key"] else None
        run_id = _runs.run_id_for(base)
        clusters = {
            (u.local_run_id, u.cluster_key): u.cluster_id for u in _runs.cluster_uses({k: v for k, v in s["runs"].items() if v})
        }
        tasks = []
        task_keys = [t.task_key for t in spec.topological_order()] if spec else list(outcomes)
        for key in task_keys:
            tspec = task_spec(spec, key)
            tasks.append(task_view(key, tspec, outcomes, s, clusters, job_id))
        life, result, message = job_state(s, outcomes)
        end = max((r.end for r in s["runs"].values() if r and r.end), default=None)
        start = run.start if run else None
        launch = s["launch"]
        start_ms = ms(start) if start else (launch.submitted_ms if launch else None)
        view = dbjobs.Run(
            job_id=job_id,
            run_id=run_id,
            number_in_job=run_id,
            original_attempt_run_id=run_id,
            attempt_number=0,
            run_name=run.job_name if run else (spec.name if spec else base),
            creator_user_name=LOCAL_USER,
            run_type=dbjobs.RunType.SUBMIT_RUN if job_id is None else dbjobs.RunType.JOB_RUN,
            trigger=dbjobs.TriggerType.ONE_TIME,
            state=dbjobs.RunState(life_cycle_state=life, result_state=result, state_message=message),
            status=run_status(life, result, message),
            start_time=start_ms,
            end_time=ms(end) if end and life == dbjobs.RunLifeCycleState.TERMINATED else 0,
            setup_duration=0,
            cleanup_duration=0,
            execution_duration=(ms(end) - start_ms) if end and start_ms and life.value == "TERMINATED" else 0,
            run_duration=(ms(end) - start_ms) if end and start_ms and life.value == "TERMINATED" else None,
            tasks=tasks if expand else None,
            job_parameters=[
                dbjobs.JobParameter(name=k, value=v, default=(spec.parameters.get(k) if spec else None))
                for k, v in (run.parameters if run else {}).items()
            ],
            job_clusters=[
                dbjobs.JobCluster(job_cluster_key=c.key, new_cluster=dbcompute.ClusterSpec.from_dict(c.raw))
                for c in (spec.clusters.values() if spec else [])
            ],
            run_page_url=Path(run.output_dir).as_uri() if run and run.output_dir else None,
            repair_history=repair_history(s, job_id),
        )
        return view

    def get_output(self, q: dict[str, Any]) -> dict[str, Any]:
        rid = as_int(q.get("run_id"), "run_id")
        runs, ids = self._all_local_ids()
        for lid, run in runs.items():
            for t in run.tasks:
                if _runs.task_run_id_for(lid, t.task_key, t.attempt) == rid:
                    return self._output(lid, run, t)
        base = self._base_local_id(rid)
        s = self._state(base)
        if len(s["outcomes"]) != 1 or (s["spec"] and len(s["spec"].tasks) != 1):
            raise invalid(
                "Retrieving the output of runs with multiple tasks is not supported. Please retrieve the output "
                "of each individual task run instead."
            )
        key, t = next(iter(s["outcomes"].items()))
        lid = s["where"][key]
        return self._output(lid, runs[lid], t)

    def _output(self, lid: str, run: JobRun, t: TaskRun) -> dict[str, Any]:
        spec = self._spec_of(run.job)
        tspec = task_spec(spec, t.task_key)
        life, result, message = task_state(t, tspec, running=run.state == "RUNNING")
        task_run_id = _runs.task_run_id_for(lid, t.task_key, t.attempt)
        metadata = dbjobs.Run(
            job_id=_runs.job_id_for(run.job),
            run_id=task_run_id,
            job_run_id=_runs.run_id_for(_runs.base_local_id(lid)),
            run_name=t.task_key,
            attempt_number=max(0, t.attempt - 1),
            creator_user_name=LOCAL_USER,
            state=dbjobs.RunState(life_cycle_state=life, result_state=result, state_message=message),
            start_time=ms(t.start),
            end_time=ms(t.end),
            run_duration=ms(t.end) - ms(t.start),  # type: ignore[operator]
            run_page_url=Path(t.output_path).as_uri() if t.output_path and Path(t.output_path).is_absolute() else None,
            overriding_parameters=dbjobs.RunParameters(notebook_params=dict(t.parameters)) if t.parameters else None,
        )
        error = f"{t.error_class}: {t.error_message}" if t.error_class else None
        trace, last = notebook_output(t.output_path)
        out = dbjobs.RunOutput(
            metadata=metadata,
            error=error,
            error_trace=trace if error else None,
            notebook_output=dbjobs.NotebookOutput(
                result=last[:MAX_OUTPUT_CHARS] if last else None, truncated=bool(last and len(last) > MAX_OUTPUT_CHARS)
            )
            if tspec is None or tspec.notebook_path is not None
            else None,
        )
        return out.as_dict()



def job_not_found(exc: JobNotFoundError) -> ApiError:
    return invalid(str(exc))
