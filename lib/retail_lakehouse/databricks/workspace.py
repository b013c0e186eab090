"""Talk to a Databricks workspace through `databricks-sdk`: the real one, or the local workspace.

`connect(env)` returns a `WorkspaceClient`: for dev/qa/prod from the SDK's standard auth chain
(the environment's profile in `params/<env>.yaml`, or DATABRICKS_* variables); for `local` from the
local workspace. The helpers below work the same against both.

Which local workspace: the one `LAKEHOUSE_HOME/workspace/server.json` names if it answers (started by
`lakehouse workspace start`, or by an earlier `connect`), else the one this process runs. Failing
both, a process that has no engine of its own (a notebook run from a terminal with papermill) starts
the workspace in the background, so its engine and registered tables serve the next notebook runs
too: a notebook then pays for its kernel and its own work, not for starting an engine. That server
stops after `LAKEHOUSE_WORKSPACE_IDLE_MINUTES` (default 20) without requests, and is replaced when
the library, the bundle or the parameter files change. `LAKEHOUSE_WORKSPACE_AUTOSTART=0`, or a
process that already shares an engine (`SPARK_REMOTE`: tests, job runs), starts it in-process instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from retail_lakehouse.core.config import env_flag, load_settings
from retail_lakehouse.core.errors import CredentialsError, JobFailedError, JobNotFoundError
from retail_lakehouse.databricks.statements import run_sql

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import date, datetime

    import pandas as pd
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.jobs import Run

__all__ = ["billing_usage", "cluster_events", "connect", "get_run", "query_history", "run_job"]

_TERMINAL = {"TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
DEFAULT_IDLE_MINUTES = 20
_log = logging.getLogger(__name__)


def connect(env: str | None = None) -> WorkspaceClient:
    """A workspace client for the environment.

    Args:
        env: `local`, `dev`, `qa` or `prod` (default `LAKEHOUSE_ENV` or `local`).

    Returns:
        A `databricks.sdk.WorkspaceClient`. Locally it points at the running local workspace
        (`LAKEHOUSE_HOME/workspace/server.json`), at the one of this process, or at one started
        now (see the module's docstring).

    Raises:
        CredentialsError: dev/qa/prod and the SDK finds no usable credentials; the message says what
            to configure.
    """
    settings = load_settings(env)
    if not settings.is_local:
        from databricks.sdk import WorkspaceClient

        # The SDK's standard chain: what the environment says wins (DATABRICKS_HOST/TOKEN or a
        # DATABRICKS_CONFIG_PROFILE), else the profile named in params/<env>.yaml.
        profile = settings.databricks.get("profile")
        chosen = any(os.environ.get(v) for v in ("DATABRICKS_HOST", "DATABRICKS_CONFIG_PROFILE"))
        try:
            # The SDK resolves auth eagerly: Config() (built here) raises ValueError when no method works.
            return WorkspaceClient(profile=profile) if profile and not chosen else WorkspaceClient()
        except ValueError as exc:
            raise CredentialsError(_credentials_message(settings.env, profile, chosen, exc)) from None
    host, token = _local_endpoint()
    return _local_client(host, token)


_SECRET_VARIABLES = (
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_PASSWORD",
    "ARM_CLIENT_SECRET",
    "DATABRICKS_AZURE_CLIENT_SECRET",
)


def _credentials_message(env: str, profile: str | None, chosen: bool, exc: Exception) -> str:
    """One line: what failed, and what to configure for `env`; never a secret value."""
    # The SDK's reason without its documentation link and config dump (it masks secrets; we check again).
    reason = " ".join(str(exc).split())
    for cut in (", please check", ". Config:", ". Env:"):
        reason = reason.split(cut, 1)[0]
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value:
            reason = reason.replace(value, "***")
    cfg = os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg"
    if chosen:
        given = {v: os.environ.get(v) for v in ("DATABRICKS_HOST", "DATABRICKS_CONFIG_PROFILE")}
        named = [f"{v}={value!r}" for v, value in given.items() if value]
        tried = f"{' and '.join(named)} from the environment"
    elif profile:
        tried = f"profile {profile!r} (params/{env}.yaml databricks.profile)"
    else:
        tried = f"the default credentials (params/{env}.yaml names no databricks.profile)"
    name = profile or "<profile>"
    return (
        f"no usable Databricks credentials for env {env!r}: {tried} failed ({reason}); configure either "
        f"profile [{name}] in {cfg} (`databricks auth login --host <workspace-url> --profile {name}`), "
        "or the variables DATABRICKS_HOST and DATABRICKS_TOKEN (or DATABRICKS_CONFIG_PROFILE naming a profile)"
    )


# ----------------------------------------------------------------------------- the local workspace


class _Live(NamedTuple):
    host: str
    token: str
    pid: int


def _workspace_dir() -> Path:
    # Not local_workspace.workspace_dir(): importing that package costs the whole SDK (~1.5 s), which
    # connect() imports only once a server is on its way (see _autostart).
    from retail_lakehouse.core.config import lakehouse_home

    return lakehouse_home() / "workspace"


def _live_server(timeout: float = 5.0) -> _Live | None:
    """The workspace `server.json` names, if it answers (the same check as `lakehouse workspace status`)."""
    import urllib.error
    import urllib.request

    root = _workspace_dir()
    try:
        info = json.loads((root / "server.json").read_text())
        token = (root / ".token").read_text().strip()
    except (OSError, ValueError):
        return None
    host = info.get("host")
    if not host or not token:
        return None
    req = urllib.request.Request(f"{host}/api/2.0/sql/warehouses", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own 127.0.0.1 server
            if resp.status != 200:
                return None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return _Live(host, token, int(info.get("pid") or 0))


def _code_stamp() -> str:
    """Changes when the code or configuration an auto-started server loaded changes."""
    from retail_lakehouse.core.config import PROJECT_ROOT, files_stamp, library_files, params_dir

    files = [*library_files((".py", ".yaml")), PROJECT_ROOT / "databricks.yml", *params_dir().glob("*.yaml")]
    return files_stamp(files, str(params_dir()), sys.executable)


def _outdated(live: _Live) -> bool:
    """True for a server connect() started (not `lakehouse workspace start`) whose code has changed since."""
    try:
        started = json.loads((_workspace_dir() / "autostart.json").read_text())
    except (OSError, ValueError):
        return False
    return started.get("pid") == live.pid and started.get("stamp") != _code_stamp()


def _autostart_allowed() -> bool:
    if os.environ.get("SPARK_REMOTE"):
        return False  # this process (tree) shares an engine already: serve from it, in-process
    return env_flag("LAKEHOUSE_WORKSPACE_AUTOSTART")


def _in_process() -> Any:
    module = sys.modules.get("retail_lakehouse.local")
    return module.current() if module is not None else None


def _local_endpoint() -> tuple[str, str]:
    live = _live_server()
    if live is not None and not _outdated(live):
        return live.host, live.token
    ws = _in_process()
    if ws is None and _autostart_allowed():
        started = _autostart()
        if started is not None:
            return started
    if ws is None:
        from retail_lakehouse import local

        ws = local.current() or local.start()
    return ws.host, ws.token


def _autostart() -> tuple[str, str] | None:
    """Start the local workspace as a background process (one per LAKEHOUSE_HOME); None if it fails."""
    import subprocess

    try:
        import fcntl
    except ImportError:  # not POSIX: no lock to share a start with
        return None
    root = _workspace_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "autostart.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a notebook run in parallel may be starting it: wait, then reuse it
        live = _live_server()
        if live is not None and not _outdated(live):
            return live.host, live.token
        if live is not None:
            _log.info("local workspace %s runs older code: replacing it", live.host)
            _terminate(live.pid)
        (root / "server.json").unlink(missing_ok=True)
        idle = os.environ.get("LAKEHOUSE_WORKSPACE_IDLE_MINUTES") or str(DEFAULT_IDLE_MINUTES)
        env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
        with open(root / "server.log", "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own module
                [sys.executable, "-m", "retail_lakehouse.local", "--port", "0", "--idle-minutes", idle],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        # The client needs the SDK anyway: importing it here overlaps its ~1.5 s with the server's start.
        import databricks.sdk  # noqa: F401

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _log.warning("the local workspace exited with code %s (see %s); serving in-process",
                             proc.returncode, root / "server.log")
                return None
            live = _live_server()
            if live is not None and live.pid == proc.pid:
                (root / "autostart.json").write_text(json.dumps({"pid": proc.pid, "stamp": _code_stamp()}))
                return live.host, live.token
            time.sleep(0.05)
        _log.warning("the local workspace did not answer in 90 s (see %s); serving in-process", root / "server.log")
        proc.terminate()
        return None


def _terminate(pid: int, wait: float = 15.0) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _local_client(host: str, token: str | None) -> WorkspaceClient:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    # An explicit config: DATABRICKS_* variables or a profile of the user's must not leak in.
    config = Config(host=host, token=token, auth_type="pat", config_file="/dev/null", profile=None)
    return WorkspaceClient(config=config)


# ----------------------------------------------------------------------------- jobs


def job_id(w: WorkspaceClient, name: str) -> int:
    """The id of the job named `name` (its `name` setting).

    Raises:
        JobNotFoundError: no such job; the message lists the jobs.
    """
    found = [j for j in w.jobs.list(name=name) if j.job_id is not None]
    if found:
        return int(found[0].job_id)  # type: ignore[arg-type]
    known = sorted(str(j.settings.name) for j in w.jobs.list() if j.settings)
    raise JobNotFoundError(f"no job named {name!r} in the workspace; jobs: {', '.join(known) or '(none)'}")


def run_job(
    w: WorkspaceClient,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float = 3600,
    progress: bool = True,
    poll_seconds: float = 1.0,
    raise_on_failure: bool = False,
) -> Run:
    """Run a job by name and wait for it, with a progress bar over its tasks.

    Args:
        w: workspace client.
        name: the job's name (or, locally, its bundle key).
        params: job parameters.
        timeout: seconds to wait.
        progress: show a tqdm bar of finished tasks.
        poll_seconds: wait between polls.
        raise_on_failure: raise JobFailedError when the run does not succeed.

    Returns:
        The finished run (`w.jobs.get_run`).

    Raises:
        JobNotFoundError: no job of that name.
        TimeoutError: the run did not finish in time (it keeps running).
    """
    from retail_lakehouse.databricks.bundle import param_str

    jid = job_id(w, name)
    waiter = w.jobs.run_now(jid, job_parameters={k: param_str(v) for k, v in (params or {}).items()} or None)
    run_id = waiter.run_id if hasattr(waiter, "run_id") else waiter.response.run_id
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=name, unit="task")
    deadline = time.monotonic() + timeout
    try:
        while True:
            run = w.jobs.get_run(run_id)
            tasks = run.tasks or []
            done = sum(1 for t in tasks if t.state and t.state.life_cycle_state and t.state.life_cycle_state.value in _TERMINAL)
            if bar is not None:
                bar.total = len(tasks)
                bar.n = done
                bar.set_postfix_str(run.state.life_cycle_state.value if run.state and run.state.life_cycle_state else "")
                bar.refresh()
            if run.state and run.state.life_cycle_state and run.state.life_cycle_state.value in _TERMINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {name!r} run {run_id} did not finish in {timeout}s; it keeps running")
            time.sleep(poll_seconds)
    finally:
        if bar is not None:
            bar.close()
    result = run.state.result_state.value if run.state and run.state.result_state else None
    if raise_on_failure and result != "SUCCESS":
        failed = [t.task_key for t in run.tasks or [] if t.state and t.state.result_state and t.state.result_state.value == "FAILED"]
        raise JobFailedError(
            f"job {name!r} run {run_id} ended {result}: failed tasks {failed}; see get_run(w, {run_id})",
            run_id=str(run_id),
            failed_tasks=failed,
        )
    return run


def get_run(w: WorkspaceClient, run_id: int) -> dict[str, Any]:
    """A run and, per task, its state, error and error trace (from runs/get-output)."""
    run = w.jobs.get_run(run_id)
    out = run.as_dict()
    tasks = []
    for t in run.tasks or []:
        item = t.as_dict()
        if t.run_id is not None and t.state and t.state.life_cycle_state and t.state.life_cycle_state.value in _TERMINAL:
            try:
                output = w.jobs.get_run_output(t.run_id)
                item["error"], item["error_trace"] = output.error, output.error_trace
                item["notebook_output"] = output.notebook_output.as_dict() if output.notebook_output else None
            except Exception as exc:  # noqa: BLE001 - an output that cannot be read does not hide the run
                item["error"] = item.get("error") or f"output unavailable: {exc}"
        tasks.append(item)
    out["tasks"] = tasks
    return out


# ----------------------------------------------------------------------------- clusters, history, cost


def cluster_events(w: WorkspaceClient, cluster_id: str, *, limit: int = 500) -> pd.DataFrame:
    """A cluster's events, oldest first: timestamp, type, details."""
    import pandas as pd
    from databricks.sdk.service.compute import GetEventsOrder

    rows = []
    for e in w.clusters.events(cluster_id, order=GetEventsOrder.ASC, limit=min(limit, 500)):
        rows.append(
            {
                "timestamp": pd.to_datetime(e.timestamp, unit="ms", utc=True),
                "type": e.type.value if e.type else None,
                "details": e.details.as_dict() if e.details else {},
            }
        )
    return pd.DataFrame(rows, columns=["timestamp", "type", "details"])


def query_history(
    w: WorkspaceClient,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    statuses: list[str] | None = None,
    query_ids: list[str] | None = None,
    max_results: int = 100,
) -> pd.DataFrame:
    """Statements served by the SQL warehouses, most recent first (optionally only the given query ids)."""
    import pandas as pd
    from databricks.sdk.service.sql import QueryFilter, QueryStatus, TimeRange

    filt = QueryFilter(statement_ids=list(query_ids) if query_ids else None)
    if start or end:
        filt.query_start_time_range = TimeRange(
            start_time_ms=int(start.timestamp() * 1000) if start else None,
            end_time_ms=int(end.timestamp() * 1000) if end else None,
        )
    if statuses:
        filt.statuses = [QueryStatus(s) for s in statuses]
    rows, token = [], None
    while len(rows) < max_results:
        page = w.query_history.list(filter_by=filt, max_results=min(100, max_results - len(rows)), page_token=token)
        for q in page.res or []:
            rows.append(
                {
                    "query_id": q.query_id,
                    "query_text": q.query_text,
                    "status": q.status.value if q.status else None,
                    "user_name": q.user_name,
                    "duration_ms": q.duration,
                    "rows_produced": q.rows_produced,
                    "start_time": pd.to_datetime(q.query_start_time_ms, unit="ms", utc=True),
                    "end_time": pd.to_datetime(q.query_end_time_ms, unit="ms", utc=True) if q.query_end_time_ms else pd.NaT,
                    "error_message": q.error_message,
                }
            )
        token = page.next_page_token
        if not page.has_next_page or not token:
            break
    return pd.DataFrame(rows)


COST_SQL = """
SELECT
  u.usage_date,
  u.usage_metadata.job_id AS job_id,
  u.usage_metadata.job_run_id AS job_run_id,
  u.usage_metadata.cluster_id AS cluster_id,
  u.sku_name,
  u.cloud,
  u.usage_start_time,
  u.usage_end_time,
  u.usage_quantity AS dbus,
  p.pricing.default AS list_price,
  u.usage_quantity * p.pricing.default AS list_cost,
  p.currency_code
FROM system.billing.usage u
JOIN system.billing.list_prices p
  ON u.sku_name = p.sku_name
 AND u.cloud = p.cloud
 AND u.usage_unit = p.usage_unit
 AND u.usage_end_time >= p.price_start_time
 AND (p.price_end_time IS NULL OR u.usage_end_time < p.price_end_time)
WHERE u.usage_date BETWEEN :start_date AND :end_date
ORDER BY u.usage_start_time
"""


def billing_usage(
    w: WorkspaceClient, start: date, end: date, *, warehouse_id: str | None = None, env: str | None = None
) -> pd.DataFrame:
    """DBUs and list cost per usage record between two dates (inclusive), from the system tables."""
    return run_sql(w, COST_SQL, {"start_date": start, "end_date": end}, warehouse_id=warehouse_id, env=env)
