"""Sandbox run history: back-dated copies of a real local run, so the local lakehouse has a past.

Every local run happens when it is started, so a fresh sandbox has no yesterday: the local
`system.billing.usage` (derived from the runs' run.json files) holds today only, and a review that
compares this week with last week finds nothing to compare with. `backfill` writes, for each day of a
range on which the job has no run, a copy of the job's latest successful local run (and of the
chained runs it started) with its times shifted back to that day and new run ids, in the runner's
run.json format. The local workspace then lists them as runs and bills them like any other.

These are sandbox history, not runs: nothing executed. Each copy's folder holds a marker file
`sandbox_history.json` (`{"sandbox_history": true, "copied_from": ..., "days_back": ...}`; the
`JobRun` model has no field for it) and no executed notebooks: the tasks' `output_path` still
points at the notebooks of the run copied. Local only (the runs folder of env local).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.jobs.job_runs import JobRun
from retail_lakehouse.jobs.runner import runs_dir

__all__ = ["MARKER", "backfill", "history_runs"]

MARKER = "sandbox_history.json"  # in the folder of every back-dated copy


def backfill(job: str, *, start: dt.date, end: dt.date, env: str = "local") -> list[str]:
    """Give the job one back-dated run a day from `start` to `end`, on the days it has none.

    Idempotent: a day with a run of the job (a real one or an earlier copy) is left alone, so a second
    call writes nothing. A chained job's child runs are copied with it (one run of each chained job).

    Args:
        job: the job key (e.g. ``retail_daily``); its latest successful local run is the one copied.
        start: first day (UTC).
        end: last day (UTC), before today.
        env: a local environment.

    Returns:
        The run ids of the copies written (the top-level runs), oldest first.

    Raises:
        ParameterError: env is not local, the range is empty or does not end before today, or
            the job has no successful run to copy (run it first: `lakehouse run JOB`).
    """
    if not load_settings(env).is_local:
        raise ParameterError("env", f"sandbox history is written to a local lakehouse only, not {env!r}")
    if end < start:
        raise ParameterError("end", f"the end ({end}) is before the start ({start})")
    today = dt.datetime.now(dt.UTC).date()
    if end >= today:
        raise ParameterError("end", f"history is the past: the end ({end}) must be before today ({today})")
    root = runs_dir(env)
    runs = _load(root)
    template = _template(runs, job, root)
    ran = {r.start.date() for r in runs.values() if r.job == job}  # real runs and earlier copies
    family = _family(runs, template.run_id)
    written = []
    day = start
    while day <= end:
        if day not in ran:
            written.append(_copy(root, family, template, day))
        day += dt.timedelta(days=1)
    return written


def history_runs(env: str = "local") -> list[str]:
    """Local run ids of every sandbox history run (copies of chained runs included), sorted."""
    root = runs_dir(env)
    return sorted(p.parent.name for p in root.glob(f"*/{MARKER}")) if root.is_dir() else []


def _load(root: Path) -> dict[str, JobRun]:
    runs: dict[str, JobRun] = {}
    for path in sorted(root.glob("*/run.json")) if root.is_dir() else []:
        try:
            runs[path.parent.name] = JobRun.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not a run of the runner
    return runs


def _template(runs: dict[str, JobRun], job: str, root: Path) -> JobRun:
    done = [
        r
        for rid, r in runs.items()
        if r.job == job and r.state == "SUCCESS" and "." not in rid and not (root / rid / MARKER).exists()
    ]
    if not done:
        raise ParameterError("job", f"job {job!r} has no successful local run to copy; run it first: lakehouse run {job}")
    return max(done, key=lambda r: r.start)


def _family(runs: dict[str, JobRun], run_id: str) -> list[JobRun]:
    """The run and the runs it started (run-job tasks, every attempt), parents first."""
    out, todo = [], [run_id]
    while todo:
        rid = todo.pop(0)
        if rid in runs:
            out.append(runs[rid])
            todo.extend(t.child_run_id for t in runs[rid].tasks if t.child_run_id)
    return out


def _copy(root: Path, family: list[JobRun], template: JobRun, day: dt.date) -> str:
    back = dt.timedelta(days=(template.start.date() - day).days)  # negative: a day after the run copied
    digest = hashlib.sha1(f"sandbox-history:{template.run_id}:{day}".encode()).hexdigest()[:6]
    new_id = f"{template.start - back:%Y%m%dT%H%M%S}-{digest}"

    old_ids = {r.run_id for r in family}

    def renamed(value: str) -> str:
        # The family's ids start with the copied run's id (`<id>.<task_key>`): give them the copy's.
        return new_id + value[len(template.run_id) :] if value in old_ids else value

    def moved(path: str | None) -> str | None:
        # A run-job task's output is its child run's folder: the copy's. A notebook stays the original.
        if path is None or Path(path).name not in old_ids:
            return path
        return str(root / renamed(Path(path).name))

    # Children first, the top-level run last: a reader never sees a parent whose children are missing.
    for run in reversed(family):
        rid = renamed(run.run_id)
        tasks = [
            replace(
                t,
                start=t.start - back,
                end=t.end - back,
                child_run_id=None if t.child_run_id is None else renamed(t.child_run_id),
                output_path=moved(t.output_path),
                parameters={k: renamed(v) for k, v in t.parameters.items()},
            )
            for t in run.tasks
        ]
        copy = replace(
            run,
            run_id=rid,
            start=run.start - back,
            end=None if run.end is None else run.end - back,
            parameters={k: renamed(v) for k, v in run.parameters.items()},
            tasks=tasks,
            output_dir=str(root / rid),
            warnings=[],
        )
        folder = root / rid
        folder.mkdir(parents=True, exist_ok=True)
        marker = {"sandbox_history": True, "copied_from": run.run_id, "days_back": back.days}
        (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        tmp = folder / "run.json.tmp"
        tmp.write_text(json.dumps(copy.to_dict(), indent=1))
        tmp.replace(folder / "run.json")  # atomic, as the runner writes it
    return new_id
