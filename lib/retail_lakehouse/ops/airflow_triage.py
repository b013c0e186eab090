"""Triage of a failed Airflow DAG run: which task failed, its tries, and the Databricks run behind it.

Reads Airflow 3's REST API (`/api/v2`): the DAG run, its task instances, each task's tries and the
XComs `run_id` / `run_page_url` that `DatabricksRunNowOperator` pushes. Authentication follows
Airflow 3: a JWT from `POST /auth/token` (user name and password of the auth manager; with the simple
auth manager's `all_admins` mode no credentials are needed), sent as `Authorization: Bearer`.
Credentials come from the environment (`AIRFLOW_API_URL`, `AIRFLOW_API_USERNAME`,
`AIRFLOW_API_PASSWORD` or `AIRFLOW_API_TOKEN`), never from a notebook parameter.

The DAGs also append every failed try to `LAKEHOUSE_HOME/airflow/failures.jsonl`;
`recorded_failures()` reads it when the API is out of reach.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retail_lakehouse.errors import ConfigError, LakehouseError

__all__ = [
    "AirflowApi",
    "AirflowApiError",
    "DagRunTriage",
    "TaskTriage",
    "recorded_failures",
    "triage_dag_run",
]

FAILED_STATES = ("failed", "upstream_failed", "up_for_retry")
TRIAGE_NOTEBOOK = "ops_notebooks/job_failure_triage.ipynb"


class AirflowApiError(LakehouseError):
    """Airflow's REST API refused or could not be reached; carries the HTTP status (0: unreachable)."""

    def __init__(self, message: str, *, status: int = 0, path: str = "") -> None:
        super().__init__(message)
        self.status, self.path = status, path


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

    @classmethod
    def from_env(cls) -> AirflowApi:
        """From `AIRFLOW_API_URL` and `AIRFLOW_API_USERNAME`/`AIRFLOW_API_PASSWORD` or `AIRFLOW_API_TOKEN`."""
        url = os.environ.get("AIRFLOW_API_URL")
        if not url:
            raise ConfigError("set AIRFLOW_API_URL to the Airflow api-server, e.g. http://localhost:8080")
        return cls(
            url,
            username=os.environ.get("AIRFLOW_API_USERNAME"),
            password=os.environ.get("AIRFLOW_API_PASSWORD"),
            token=os.environ.get("AIRFLOW_API_TOKEN"),
        )

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True) -> Any:
        url = self.base_url.rstrip("/") + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self._token()}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - a configured URL
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            hint = " (check AIRFLOW_API_USERNAME/AIRFLOW_API_PASSWORD)" if exc.code in (401, 403) else ""
            raise AirflowApiError(f"{method} {path}: HTTP {exc.code}: {detail}{hint}", status=exc.code, path=path) from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowApiError(
                f"Airflow API at {self.base_url} is unreachable ({exc}); is the api-server running?", path=path
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

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def diagnosis(self) -> str | None:
        """How to diagnose the Databricks run behind the task (the job failure triage notebook)."""
        if self.databricks_run_id is None:
            return None
        return (
            f"papermill {TRIAGE_NOTEBOOK} triage_{self.databricks_run_id}.ipynb "
            f"-p run_id {self.databricks_run_id} -f params/{self.env}.yaml"
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

    def rows(self) -> list[dict[str, Any]]:
        """One row a task (for a DataFrame in the notebook)."""
        return [
            {
                "task_id": t.task_id,
                "state": t.state,
                "try_number": t.try_number,
                "max_tries": t.max_tries,  # Airflow raises it when a task is cleared
                "databricks_run_id": t.databricks_run_id,
                "run_page_url": t.databricks_run_page_url,
                "diagnosis": t.diagnosis,
            }
            for t in self.tasks
        ]

    def summary(self) -> str:
        """Markdown: the run, the failed task(s), their tries and where to look next."""
        lines = [f"**DAG run** `{self.dag_id}` / `{self.run_id}`: **{self.state}** (started {self.start_date})"]
        if not self.failed_tasks:
            lines.append("No task failed in this run.")
        for t in self.failed_tasks:
            lines.append(f"- task `{t.task_id}` **{t.state}** at try {t.try_number} (max_tries {t.max_tries})")
            for tr in t.tries:
                lines.append(
                    f"  - try {tr.get('try_number')}: {tr.get('state')} {tr.get('start_date')} -> {tr.get('end_date')}"
                )
            if t.databricks_run_id is not None:
                lines.append(f"  - Databricks run {t.databricks_run_id}: {t.databricks_run_page_url}")
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


def triage_dag_run(dag_id: str, run_id: str, *, api: AirflowApi | None = None, env: str = "local") -> DagRunTriage:
    """Read a DAG run, its task instances, their tries and Databricks runs from Airflow's REST API.

    Args:
        dag_id: e.g. ``retail_data_quality_checks``.
        run_id: the DAG run id, e.g. ``scheduled__2024-01-05T02:00:00+00:00``.
        api: the client (default: `AirflowApi.from_env()`).
        env: the lakehouse environment the DAGs run against (for the diagnosis command).

    Returns:
        The run with every task; `failed_tasks` are the ones to look at.

    Raises:
        AirflowApiError: the API is unreachable, refuses the credentials, or has no such DAG run.
    """
    api = api or AirflowApi.from_env()
    base = f"/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    try:
        run = api.get(base)
    except AirflowApiError as exc:
        if exc.status == 404:
            raise AirflowApiError(f"DAG run {dag_id}/{run_id} does not exist in Airflow", status=404, path=base) from None
        raise
    tis = api.get(f"{base}/taskInstances").get("task_instances", [])
    tasks = []
    for ti in sorted(tis, key=lambda t: (t.get("start_date") or "", t["task_id"])):
        task_id = ti["task_id"]
        tries = api.get(f"{base}/taskInstances/{urllib.parse.quote(task_id)}/tries").get("task_instances", [])
        db_run = _xcom(api, base, task_id, "run_id")
        tasks.append(
            TaskTriage(
                task_id=task_id,
                state=ti.get("state"),
                try_number=int(ti.get("try_number") or 0),
                max_tries=int(ti.get("max_tries") or 0),
                operator=ti.get("operator"),
                tries=[
                    {k: tr.get(k) for k in ("try_number", "state", "start_date", "end_date", "duration")}
                    for tr in sorted(tries, key=lambda x: x.get("try_number") or 0)
                ],
                databricks_run_id=int(db_run) if db_run not in (None, "") else None,
                databricks_run_page_url=_xcom(api, base, task_id, "run_page_url"),
                env=env,
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
        from retail_lakehouse.config import lakehouse_home

        path = lakehouse_home() / "airflow" / "failures.jsonl"
    p = Path(path)
    if not p.is_file():
        return []
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if dag_id is None or r.get("dag_id") == dag_id]
