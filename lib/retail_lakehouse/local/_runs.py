"""Local run history (run.json files of the runner) seen as Databricks runs and job clusters.

Ids: a run's integer id is derived from its local run id, a job's from its bundle key, so they
stay the same across restarts of the workspace and for runs started by `lakehouse run`. A repair
of run R is the local run `R.repair<N>`; jobs created through the API have keys `api_job_<id>`,
one-time submitted runs `submit_<id>`.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retail_lakehouse.jobs.job_runs import JobRun, stable_id, workspace_run_id
from retail_lakehouse.jobs.runner import runs_dir

REPAIR = re.compile(r"^(?P<base>.+)\.repair(?P<n>\d+)$")
API_JOB_PREFIX = "api_job_"
SUBMIT_PREFIX = "submit_"

_cache_lock = threading.Lock()
_cache: dict[Path, tuple[int, JobRun]] = {}


def job_id_for(key: str) -> int | None:
    """Integer job id of a job key (None for a one-time submitted run)."""
    if key.startswith(API_JOB_PREFIX):
        return int(key[len(API_JOB_PREFIX) :])
    if key.startswith(SUBMIT_PREFIX):
        return None
    return stable_id(f"job:{key}")


def run_id_for(local_run_id: str) -> int:
    return workspace_run_id(local_run_id)


def task_run_id_for(local_run_id: str, task_key: str, attempt: int) -> int:
    return stable_id(f"task:{local_run_id}/{task_key}/{attempt}")


def load_runs(env: str = "local") -> dict[str, JobRun]:
    """Every run with a run.json: local run id -> run (re-read only when the file changed)."""
    root = runs_dir(env)
    found: dict[str, JobRun] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.glob("*/run.json")):
        try:
            mtime = path.stat().st_mtime_ns
            with _cache_lock:
                hit = _cache.get(path)
            if hit and hit[0] == mtime:
                run = hit[1]
            else:
                run = JobRun.from_dict(json.loads(path.read_text()))
                with _cache_lock:
                    _cache[path] = (mtime, run)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not a run of this runner
        found[path.parent.name] = run
    return found


def fingerprint(env: str = "local") -> tuple[tuple[str, int], ...]:
    """Changes whenever a run.json is added or rewritten."""
    root = runs_dir(env)
    if not root.is_dir():
        return ()
    out = []
    for path in sorted(root.glob("*/run.json")):
        try:
            out.append((path.parent.name, path.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


@dataclass(frozen=True)
class ClusterUse:
    """One job cluster of one (local) run: the tasks of the run declared on one `job_cluster_key`."""

    cluster_id: str
    cluster_key: str
    local_run_id: str
    job_key: str
    job_name: str
    spec: dict[str, Any]
    start: datetime
    end: datetime
    running: bool

    @property
    def node_type_id(self) -> str | None:
        return self.spec.get("node_type_id")

    @property
    def driver_node_type_id(self) -> str | None:
        return self.spec.get("driver_node_type_id") or self.node_type_id

    @property
    def autoscale(self) -> tuple[int, int] | None:
        auto = self.spec.get("autoscale")
        if isinstance(auto, dict):
            return int(auto.get("min_workers", 0)), int(auto.get("max_workers", 0))
        return None

    @property
    def workers(self) -> int:
        """Workers billed: `num_workers`, or `min_workers` with autoscale (nothing scales locally)."""
        if self.autoscale:
            return self.autoscale[0]
        return int(self.spec.get("num_workers") or 0)

    @property
    def hours(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds()) / 3600


def cluster_id_for(local_run_id: str, key: str, start: datetime) -> str:
    """A Databricks-looking cluster id (`MMDD-HHMMSS-<8 hex>`), stable for a run and cluster key."""
    digest = f"{stable_id(f'cluster:{local_run_id}/{key}'):013x}"[-8:]
    return f"{start:%m%d-%H%M%S}-{digest}"


def cluster_uses(runs: dict[str, JobRun]) -> list[ClusterUse]:
    """The job clusters the runs used, one per run and cluster key, with the times of their tasks."""
    uses = []
    for local_id, run in runs.items():
        by_key: dict[str, list[Any]] = {}
        for t in run.tasks:
            key = t.compute.get("job_cluster_key") if t.compute else None
            if key and t.attempt > 0:
                by_key.setdefault(key, []).append(t)
        for key, tasks in by_key.items():
            start = min(t.start for t in tasks)
            end = max(t.end for t in tasks)
            running = run.state == "RUNNING"
            spec = dict(tasks[-1].compute)
            uses.append(
                ClusterUse(
                    cluster_id=cluster_id_for(local_id, key, start),
                    cluster_key=key,
                    local_run_id=local_id,
                    job_key=run.job,
                    job_name=run.job_name,
                    spec=spec,
                    start=start,
                    end=end,
                    running=running,
                )
            )
    uses.sort(key=lambda u: u.start, reverse=True)
    return uses


def base_local_id(local_run_id: str) -> str:
    """The run a repair belongs to (a run that is no repair: itself)."""
    m = REPAIR.match(local_run_id)
    return m.group("base") if m else local_run_id


def cluster_name(use: ClusterUse) -> str:
    """Job clusters are named `job-<job id>-run-<run id>` on Databricks."""
    job_id = job_id_for(use.job_key)
    return f"job-{job_id if job_id is not None else 'submit'}-run-{run_id_for(base_local_id(use.local_run_id))}"


def stable_id_hex(text: str) -> str:
    return f"{stable_id(text):013x}"
