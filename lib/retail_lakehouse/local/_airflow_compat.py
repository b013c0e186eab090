"""What the Airflow Databricks provider needs of the local workspace beyond what the SDK needs.

The provider (`apache-airflow-providers-databricks` 7.x, Jobs API 2.2 paths) differs from the SDK in
two ways that matter here:

- `DatabricksHook.get_run_page_url` reads `response["run_page_url"]` right after `run-now`, before
  the local runner has written the run's `run.json`; the plain handler leaves the field out until
  then (a KeyError in the operator). Here `runs/get` always carries it: the run's folder under
  `LAKEHOUSE_HOME/runs/<local run id>/`, the same URL the run shows once it started. Likewise
  `repair_history` (read by `get_latest_repair_id` when `repair_run=True`) always lists the original run.
- `DatabricksRunNowOperator(cancel_previous_runs=True)` calls `jobs/runs/cancel-all`.

`routes(ws)` returns compiled routes that take precedence over the server's own (the first match
wins); the server's route table puts them first, so `python -m retail_lakehouse.local` serves them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from retail_lakehouse.local._common import as_int, invalid

if TYPE_CHECKING:
    from retail_lakehouse.local._jobs import JobsService
    from retail_lakehouse.local._server import Handler, LocalWorkspace

__all__ = ["cancel_all", "get_run", "routes"]

_V = r"/api/2\.[012]"


def get_run(jobs: JobsService, q: dict[str, Any]) -> dict[str, Any]:
    """`jobs/runs/get`, with `run_page_url` present from the moment the run is accepted."""
    out = jobs.get_run(q)
    if not out.get("run_page_url"):
        from retail_lakehouse.jobs import runner

        base = jobs._base_local_id(q.get("run_id"))
        out["run_page_url"] = (runner.runs_dir(jobs.env) / base).resolve().as_uri()
    if not out.get("repair_history"):  # Databricks lists the original run first; the repair path needs it
        out["repair_history"] = [
            {"type": "ORIGINAL", "id": out.get("run_id"), "start_time": out.get("start_time"), "state": out.get("state")}
        ]
    return out


def cancel_all(jobs: JobsService, body: dict[str, Any]) -> dict[str, Any]:
    """`jobs/runs/cancel-all`: cancel every active run of `job_id` (or of all jobs with `all_queued_runs`)."""
    job_id = body.get("job_id")
    if job_id in (None, "") and not body.get("all_queued_runs"):
        raise invalid("job_id is required (or all_queued_runs: true)")
    wanted = as_int(job_id, "job_id", 0) or None
    page_token: str | None = None
    while True:
        q: dict[str, Any] = {"active_only": "true", "limit": 100}
        if wanted is not None:
            q["job_id"] = wanted
        if page_token:
            q["page_token"] = page_token
        page = jobs.list_runs(q)
        for run in page.get("runs", []):
            jobs.cancel({"run_id": run["run_id"]})
        page_token = page.get("next_page_token")
        if not page_token:
            return {}


def routes(ws: LocalWorkspace) -> list[tuple[str, re.Pattern[str], Handler]]:
    """Routes to put before the server's own."""
    jobs = ws.jobs
    table: list[tuple[str, str, Handler]] = [
        ("GET", _V + r"/jobs/runs/get", lambda q, b, m: get_run(jobs, q)),
        ("POST", _V + r"/jobs/runs/cancel-all", lambda q, b, m: cancel_all(jobs, b)),
    ]
    return [(method, re.compile(pattern + "$"), fn) for method, pattern, fn in table]

