"""Triage of a failed Airflow DAG run: which task failed, its tries, and the Databricks run behind it.

Reads Airflow 3's REST API (`/api/v2`): the DAG run, its task instances, each task's tries, the
XComs `run_id` / `run_page_url` that `DatabricksRunNowOperator` pushes (its latest try's run) and,
for a failed task, each try's log (the provider logs `Run submitted with run_id: N` and the
Databricks errors it gave up on). Authentication follows Airflow 3: a JWT from `POST /auth/token`
(user name and password of the auth manager), sent as `Authorization: Bearer`.

Where Airflow is: `AIRFLOW_API_URL`, else `airflow.api_url` in `params/<env>.yaml`; the user:
`AIRFLOW_API_USERNAME`, else `airflow.username`; the secret only from the environment
(`AIRFLOW_API_PASSWORD` or `AIRFLOW_API_TOKEN`), never from a parameter file or a notebook
parameter.

`job_failure_triage.diagnose_dag_run()` then classifies the failure through the failed task's
Databricks run (or, when the workspace does not answer, the error in Airflow's log). The DAGs also
append every failed try to
`LAKEHOUSE_HOME/airflow/failures.jsonl`; `recorded_failures()` reads it (the local drills' record of
each try's Databricks run, as the logs hold it on a real deployment).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.errors import ConfigError, LakehouseError, ParameterError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AirflowApi",
    "AirflowApiError",
    "DagRunTriage",
    "TaskTriage",
    "dag_target",
    "log_facts",
    "recorded_failures",
    "triage_dag_run",
]

FAILED_STATES = ("failed", "upstream_failed", "up_for_retry")
TRIAGE_NOTEBOOK = "ops_notebooks/job_failure_triage.ipynb"
URL_VAR, USER_VAR, PASSWORD_VAR, TOKEN_VAR = (
    "AIRFLOW_API_URL",
    "AIRFLOW_API_USERNAME",
    "AIRFLOW_API_PASSWORD",
    "AIRFLOW_API_TOKEN",
)
# Airflow's own rules: dag ids are KEY_REGEX, run ids its default `allowed_run_id_pattern`.
_DAG_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_DAG_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+\-]{1,250}$")
_SUBMITTED = re.compile(r"Run submitted with run_id:\s*(\d+)")
_EXCEPTION_LINE = re.compile(r"^\s*((?:[\w.]+\.)?\w+(?:Error|Exception)): (.+)$")


class AirflowApiError(LakehouseError):
    """Airflow's REST API refused or could not be reached; carries the HTTP status (0: unreachable)."""

    def __init__(self, message: str, *, status: int = 0, path: str = "") -> None:
        super().__init__(message)
        self.status, self.path = status, path


def dag_target(dag_id: str, dag_run_id: str, *, job: str = "", job_run_id: str = "", action: str = "none") -> tuple[str, str] | None:
    """Validate the notebook's Airflow parameters, before anything is touched.

    Args:
        dag_id: the DAG, e.g. ``retail_ingestion``; empty for a Databricks job run (no Airflow).
        dag_run_id: the DAG run, e.g. ``scheduled__2024-01-05T02:00:00+00:00``.
        job: the notebook's `job` (must be empty with a DAG run).
        job_run_id: the notebook's Databricks `job_run_id` (must be empty with a DAG run).
        action: the notebook's `action` (only `none` with a DAG run: Airflow retries by clearing).

    Returns:
        ``(dag_id, dag_run_id)``, or None when neither is given.

    Raises:
        ParameterError: a malformed id, a run id without a DAG or the other way round, or a
            Databricks run or retry asked for together with a DAG run.
    """
    dag, run = str(dag_id or "").strip(), str(dag_run_id or "").strip()
    if not dag:
        if run:
            raise ParameterError("dag_id", f"dag_run_id {run!r} needs the DAG it belongs to: set dag_id too")
        return None
    if not _DAG_ID.match(dag):
        raise ParameterError("dag_id", f"{dag!r} is not a DAG id (letters, digits, '_', '-', '.'; at most 250)")
    if not run:
        raise ParameterError("dag_run_id", f"the DAG run of {dag} to triage is required with dag_id "
                             "(its Run Id in the Airflow UI, e.g. scheduled__2024-01-05T02:00:00+00:00)")
    if not _DAG_RUN_ID.match(run):
        raise ParameterError("dag_run_id", f"{run!r} is not an Airflow run id (letters, digits, '_.~:+-')")
    if str(job or "").strip() or str(job_run_id or "").strip():
        raise ParameterError("dag_id", "give either dag_id/dag_run_id (an Airflow DAG run) or job/job_run_id "
                             "(a Databricks job run), not both")
    if action != "none":
        raise ParameterError("action", "a DAG run is retried by clearing its failed task in Airflow (the triage "
                             "prints how), not by repairing the Databricks run behind Airflow's back: use action none")
    return dag, run


def _airflow_settings(env: str) -> dict[str, Any]:
    """The optional `airflow:` section of `params/<env>.yaml` (api_url, username; never a secret)."""
    import yaml

    from retail_lakehouse.core.config import params_dir

    path = params_dir() / f"{env}.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    section = raw.get("airflow") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        return {}
    for secret in ("password", "token"):
        if section.get(secret):
            raise ConfigError(f"{path} holds airflow.{secret}: secrets never go in a parameter file; "
                              f"set {PASSWORD_VAR if secret == 'password' else TOKEN_VAR} in the environment")
    return section


@dataclass
class AirflowApi:
    """A client of Airflow 3's REST API.

    Attributes:
        base_url: the api-server, e.g. ``http://127.0.0.1:8080``.
        username: user of the auth manager (with `password`), or None.
        token: a JWT already issued (instead of user name and password).
    """

    base_url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigError(f"{URL_VAR} must be an http(s) URL of the Airflow api-server, not {self.base_url!r}")

    @classmethod
    def for_env(cls, env: str = "local") -> AirflowApi:
        """The Airflow of an environment: environment variables first, then `params/<env>.yaml`.

        Raises:
            ConfigError: no Airflow is configured (the message names the variables to set), or
                the parameter file holds a secret.
        """
        conf = _airflow_settings(env)
        url = os.environ.get(URL_VAR) or conf.get("api_url")
        if not url:
            raise ConfigError(
                f"no Airflow API for env {env}: set {URL_VAR} to the api-server (e.g. http://localhost:8080) "
                f"with {USER_VAR}/{PASSWORD_VAR} (or {TOKEN_VAR}), or airflow.api_url in params/{env}.yaml"
            )
        return cls(
            str(url),
            username=os.environ.get(USER_VAR) or conf.get("username"),
            password=os.environ.get(PASSWORD_VAR),
            token=os.environ.get(TOKEN_VAR),
        )

    @classmethod
    def from_env(cls) -> AirflowApi:
        """From the environment variables alone (`AIRFLOW_API_URL`, ...), for `LAKEHOUSE_ENV`."""
        from retail_lakehouse.core.config import current_env

        return cls.for_env(current_env())

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True) -> Any:
        url = self.base_url.rstrip("/") + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self._token()}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - http(s) only
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - checked in __post_init__
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            hint = f" (check {USER_VAR}/{PASSWORD_VAR} or {TOKEN_VAR})" if exc.code in (401, 403) else ""
            raise AirflowApiError(f"{method} {path}: HTTP {exc.code}: {detail}{hint}", status=exc.code, path=path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AirflowApiError(
                f"the Airflow API at {self.base_url} is unreachable ({reason}): is the api-server running, and "
                f"does {URL_VAR} (or airflow.api_url in params/<env>.yaml) point at it?",
                path=path,
            ) from None
        return json.loads(raw) if raw else {}

    def _token(self) -> str:
        if not self.token:
            body = {"username": self.username or "", "password": self.password or ""}
            self.token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
        return self.token  # type: ignore[return-value]

    def get(self, path: str, **query: Any) -> Any:
        """GET an `/api/v2` path (query values are URL-encoded)."""
        qs = f"?{urllib.parse.urlencode(query)}" if query else ""
        return self._request("GET", f"/api/v2{path}{qs}")


# ----------------------------------------------------------------------------- logs


def _log_lines(content: Any) -> list[str]:
    """Airflow 3 log content (structured messages or plain lines) as text lines."""
    lines: list[str] = []
    items = content if isinstance(content, list) else [content] if content else []
    for item in items:
        if isinstance(item, dict):
            event = item.get("event")
            if event and not str(event).startswith("::"):
                lines.append(str(event))
            for exc in item.get("error_detail") or []:
                if isinstance(exc, dict) and exc.get("exc_type"):
                    lines.append(f"{exc['exc_type']}: {exc.get('exc_value', '')}")
        elif item:
            lines.extend(str(item).splitlines())
    return lines


def log_facts(content: Any) -> tuple[list[int], str | None]:
    """What a try's log says: the Databricks runs it submitted and the last exception it raised.

    Args:
        content: the `content` of `GET .../logs/{try_number}` (structured messages or text lines).

    Returns:
        ``(databricks run ids in order, "ExceptionType: message" or None)``.
    """
    lines = _log_lines(content)
    runs = [int(m.group(1)) for line in lines for m in _SUBMITTED.finditer(line)]
    error = None
    for line in lines:
        m = _EXCEPTION_LINE.match(line)
        if m:
            error = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    return runs, error


# ----------------------------------------------------------------------------- the DAG run


@dataclass
class TaskTriage:
    """One task instance of the DAG run, with its tries and its Databricks run."""

    task_id: str
    state: str | None
    try_number: int
    max_tries: int
    operator: str | None
    tries: list[dict[str, Any]]
    databricks_run_id: int | None
    databricks_run_page_url: str | None
    env: str
    start_date: str | None = None
    end_date: str | None = None
    duration: float | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def tries_allowed(self) -> int:
        """Tries Airflow allows (`max_tries` counts the retries; clearing a task raises it)."""
        return self.max_tries + 1

    @property
    def diagnosis(self) -> str | None:
        """How to diagnose the Databricks run behind the task (the job failure triage notebook)."""
        if self.databricks_run_id is None:
            return None
        return (
            f"papermill {TRIAGE_NOTEBOOK} triage_{self.databricks_run_id}.ipynb "
            f"-p job_run_id {self.databricks_run_id} -p env {self.env}"
        )


@dataclass
class DagRunTriage:
    """A DAG run as Airflow's API shows it."""

    dag_id: str
    run_id: str
    state: str | None
    run_type: str | None
    logical_date: str | None
    start_date: str | None
    end_date: str | None
    tasks: list[TaskTriage]

    @property
    def failed_tasks(self) -> list[TaskTriage]:
        return [t for t in self.tasks if t.failed]

    @property
    def failed_task(self) -> TaskTriage | None:
        """The task that failed first by itself (not `upstream_failed`), else the first failed one."""
        own = [t for t in self.failed_tasks if t.state != "upstream_failed"]
        return (own or self.failed_tasks or [None])[0]

    def rows(self) -> list[dict[str, Any]]:
        """One row a task (for a DataFrame in the notebook)."""
        return [
            {
                "task_id": t.task_id,
                "state": t.state,
                "try_number": t.try_number,
                "max_tries": t.max_tries,  # Airflow's retries; raised when a task is cleared
                "start_date": t.start_date,
                "end_date": t.end_date,
                "duration_s": None if t.duration is None else round(t.duration, 1),
                "databricks_run_id": t.databricks_run_id,
                "run_page_url": t.databricks_run_page_url,
                "diagnosis": t.diagnosis,
            }
            for t in self.tasks
        ]

    def try_rows(self) -> list[dict[str, Any]]:
        """One row a try of every task: state, times, the Databricks run it launched, its error."""
        return [
            {
                "task_id": t.task_id,
                "try_number": tr.get("try_number"),
                "state": tr.get("state"),
                "start_date": tr.get("start_date"),
                "end_date": tr.get("end_date"),
                "duration_s": None if tr.get("duration") is None else round(float(tr["duration"]), 1),
                "databricks_run_id": tr.get("databricks_run_id"),
                "error": tr.get("error"),
            }
            for t in self.tasks
            for tr in t.tries
        ]

    def tries_frame(self) -> pd.DataFrame:
        """`try_rows()` as a DataFrame with UTC timestamps (the table and the timeline of tries)."""
        import pandas as pd

        columns = ["task_id", "try_number", "state", "start_date", "end_date", "duration_s", "databricks_run_id", "error"]
        frame = pd.DataFrame(self.try_rows(), columns=columns)
        for col in ("start_date", "end_date"):
            frame[col] = pd.to_datetime(frame[col], utc=True, errors="coerce")
        frame["databricks_run_id"] = frame["databricks_run_id"].astype("Int64")
        return frame

    def tries_timeline(self) -> pd.DataFrame:
        """The tries that started and ended, each labelled with the Databricks run it launched (a timeline)."""
        return self.tries_frame().dropna(subset=["start_date", "end_date"]).assign(
            label=lambda f: "try " + f["try_number"].astype(str) + ": Databricks run "
            + f["databricks_run_id"].astype(str).replace("<NA>", "none")
        )

    def clear_command(self, task: TaskTriage) -> str:
        """How to rerun the failed task in the same DAG run once the cause is fixed."""
        if self.logical_date:
            day = self.logical_date
            return f"airflow tasks clear {self.dag_id} -t '^{task.task_id}$' -s {day} -e {day} --only-failed --downstream --yes"
        return (f"POST /api/v2/dags/{self.dag_id}/clearTaskInstances "
                f"{{\"dag_run_id\": \"{self.run_id}\", \"task_ids\": [\"{task.task_id}\"], \"only_failed\": true, "
                "\"include_downstream\": true, \"dry_run\": false}")

    def summary(self) -> str:
        """Markdown: the run, the failed task(s), their tries and where to look next."""
        lines = [f"**DAG run** `{self.dag_id}` / `{self.run_id}`: **{self.state}** (started {self.start_date})"]
        if not self.failed_tasks:
            lines.append("No task failed in this run.")
        for t in self.failed_tasks:
            lines.append(f"- task `{t.task_id}` **{t.state}** at try {t.try_number} of {t.tries_allowed} "
                         f"(retries {t.max_tries})")
            for tr in t.tries:
                db = f", Databricks run {tr['databricks_run_id']}" if tr.get("databricks_run_id") else ""
                lines.append(
                    f"  - try {tr.get('try_number')}: {tr.get('state')} {tr.get('start_date')} -> {tr.get('end_date')}{db}"
                )
            if t.databricks_run_id is not None:
                lines.append(f"  - Databricks run {t.databricks_run_id} (its last try): {t.databricks_run_page_url}")
                lines.append(f"  - diagnose it: `{t.diagnosis}`")
            else:
                lines.append("  - no Databricks run: the task failed before the job started (connection, job lookup)")
        return "\n".join(lines)


def _xcom(api: AirflowApi, base: str, task_id: str, key: str) -> Any:
    try:
        entry = api.get(f"{base}/taskInstances/{urllib.parse.quote(task_id)}/xcomEntries/{key}", deserialize="true")
    except AirflowApiError as exc:
        if exc.status == 404:
            return None
        raise
    value = entry.get("value")
    if isinstance(value, str):  # Airflow returns the stringified value unless deserialized
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return value


def _try_log(api: AirflowApi, base: str, task_id: str, try_number: int) -> tuple[list[int], str | None]:
    """A try's Databricks runs and error from its log; nothing when Airflow cannot serve the log."""
    try:
        log = api.get(f"{base}/taskInstances/{urllib.parse.quote(task_id)}/logs/{try_number}", full_content="true")
    except AirflowApiError as exc:
        if exc.status in (400, 404):
            return [], None
        raise
    return log_facts(log.get("content") if isinstance(log, dict) else log)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def triage_dag_run(
    dag_id: str,
    run_id: str,
    *,
    api: AirflowApi | None = None,
    env: str = "local",
    failures_file: str | Path | None = None,
) -> DagRunTriage:
    """Read a DAG run, its task instances, their tries and Databricks runs from Airflow's REST API.

    Each try's Databricks run comes from its log (`Run submitted with run_id`), else from the
    DAGs' failure record when it is readable here; the latest try's also from the XCom `run_id`.

    Args:
        dag_id: e.g. ``retail_data_quality_checks``.
        run_id: the DAG run id, e.g. ``scheduled__2024-01-05T02:00:00+00:00``.
        api: the client (default: `AirflowApi.for_env(env)`).
        env: the lakehouse environment the DAGs run against (for the diagnosis command).
        failures_file: the DAGs' failure record (default `LAKEHOUSE_HOME/airflow/failures.jsonl`).

    Returns:
        The run with every task; `failed_tasks` are the ones to look at.

    Raises:
        AirflowApiError: the API is unreachable, refuses the credentials, or has no such DAG run.
    """
    api = api or AirflowApi.for_env(env)
    base = f"/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    try:
        run = api.get(base)
    except AirflowApiError as exc:
        if exc.status == 404:
            raise AirflowApiError(f"DAG run {dag_id}/{run_id} does not exist in Airflow (check dag_id and "
                                  "dag_run_id: the Run Id column of the DAG's runs)", status=404, path=base) from None
        raise
    tis = api.get(f"{base}/taskInstances", limit=100).get("task_instances", [])
    recorded = {
        (r.get("task_id"), r.get("try_number")): r
        for r in recorded_failures(failures_file, dag_id=dag_id)
        if r.get("dag_run_id") == run_id
    }
    tasks = []
    for ti in sorted(tis, key=lambda t: (t.get("start_date") or "", t["task_id"])):
        task_id = ti["task_id"]
        tries = api.get(f"{base}/taskInstances/{urllib.parse.quote(task_id)}/tries").get("task_instances", [])
        db_run = _int(_xcom(api, base, task_id, "run_id"))
        failed = ti.get("state") in FAILED_STATES
        try_rows = []
        for tr in sorted(tries, key=lambda x: x.get("try_number") or 0):
            n = int(tr.get("try_number") or 0)
            row = {k: tr.get(k) for k in ("try_number", "state", "start_date", "end_date", "duration")}
            runs, error = _try_log(api, base, task_id, n) if failed and n else ([], None)
            record = recorded.get((task_id, n)) or {}
            row["databricks_run_id"] = runs[-1] if runs else _int(record.get("databricks_run_id"))
            row["error"] = error or record.get("exception")
            try_rows.append(row)
        if try_rows and db_run is not None and try_rows[-1]["databricks_run_id"] is None:
            try_rows[-1]["databricks_run_id"] = db_run
        tasks.append(
            TaskTriage(
                task_id=task_id,
                state=ti.get("state"),
                try_number=int(ti.get("try_number") or 0),
                max_tries=int(ti.get("max_tries") or 0),
                operator=ti.get("operator"),
                tries=try_rows,
                databricks_run_id=db_run if db_run is not None else (try_rows[-1]["databricks_run_id"] if try_rows else None),
                databricks_run_page_url=_xcom(api, base, task_id, "run_page_url"),
                env=env,
                start_date=ti.get("start_date"),
                end_date=ti.get("end_date"),
                duration=ti.get("duration"),
                error=next((r["error"] for r in reversed(try_rows) if r.get("error")), None),
            )
        )
    return DagRunTriage(
        dag_id=dag_id,
        run_id=run_id,
        state=run.get("state"),
        run_type=run.get("run_type"),
        logical_date=run.get("logical_date"),
        start_date=run.get("start_date"),
        end_date=run.get("end_date"),
        tasks=tasks,
    )


def recorded_failures(path: str | Path | None = None, *, dag_id: str | None = None) -> list[dict[str, Any]]:
    """The failed tries the DAGs' callbacks appended to `LAKEHOUSE_HOME/airflow/failures.jsonl` (oldest first)."""
    if path is None:
        from retail_lakehouse.core.config import lakehouse_home

        path = lakehouse_home() / "airflow" / "failures.jsonl"
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            if line.strip():
                rows.append(json.loads(line))
    return [r for r in rows if dag_id is None or r.get("dag_id") == dag_id]
