"""Shared pieces of the retail lakehouse DAGs: the jobs of databricks.yml, retries, failure records.

The DAGs trigger the Databricks jobs the Asset Bundle (`databricks.yml`) declares, by job name,
through the Airflow Databricks provider. This module imports only Airflow and PyYAML: the DAG
processor must not need the lakehouse's own (heavy) dependencies.

Knobs, read when a DAG file is parsed (environment variables of the Airflow deployment):

- `LAKEHOUSE_ENV` (default `local`): environment; the Databricks connection is `databricks_<env>`.
  The Airflow Variable `lakehouse_env`, when set, overrides it at run time (the connection id is a
  template).
- `LAKEHOUSE_BUNDLE`: the bundle file (default: `databricks.yml` two folders above this one).
- `LAKEHOUSE_HOME`: where failures are recorded (`<home>/airflow/failures.jsonl`); default
  `.lakehouse/` in the repository, as for the lakehouse itself.
- Notifications when a task fails for good (its retries exhausted), besides the failure record:
  Slack through the Slack provider's `SlackWebhookNotifier` on the connection
  `RETAIL_AIRFLOW_SLACK_CONN_ID` (default `slack_retail_alerts`), and e-mail through the SMTP
  provider's `SmtpNotifier` on `RETAIL_AIRFLOW_SMTP_CONN_ID` (default `smtp_retail_alerts`) to
  `RETAIL_AIRFLOW_ALERT_EMAIL` (default `oncall@localhost`). The connections hold the webhook URL
  and the SMTP credentials and come from the deployment's environment (`AIRFLOW_CONN_SLACK_RETAIL_ALERTS`,
  `AIRFLOW_CONN_SMTP_RETAIL_ALERTS`) or its secrets backend, never from this repository.
  `RETAIL_AIRFLOW_NOTIFY=0` turns them off.
- `RETAIL_AIRFLOW_RETRIES` (3), `RETAIL_AIRFLOW_RETRY_DELAY_SECONDS` (300),
  `RETAIL_AIRFLOW_MAX_RETRY_DELAY_SECONDS` (1800), `RETAIL_AIRFLOW_POLL_SECONDS` (30),
  `RETAIL_AIRFLOW_API_RETRY_LIMIT` (3): the drills and their tests shrink them.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RETRIES = 3
FAILURES_FILE = "failures.jsonl"

__all__ = [
    "MissingJobError",
    "bundle_path",
    "conn_id",
    "default_args",
    "failure_notifiers",
    "failures_path",
    "job_parameters",
    "job_spec",
    "lakehouse_env",
    "poll_seconds",
    "record_failure",
    "retries",
    "run_job_task",
]


class MissingJobError(ValueError):
    """A DAG names a job that databricks.yml does not declare (fails the DAG import)."""


def bundle_path() -> Path:
    return Path(os.environ.get("LAKEHOUSE_BUNDLE") or REPO_ROOT / "databricks.yml")


def load_jobs(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The jobs of the bundle, by job name (`resources.jobs.<key>.name`, else the key)."""
    path = path or bundle_path()
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise MissingJobError(f"bundle file {path} does not exist; set LAKEHOUSE_BUNDLE to databricks.yml") from None
    jobs = ((doc.get("resources") or {}).get("jobs")) or {}
    return {str(spec.get("name") or key): spec for key, spec in jobs.items()}


def job_spec(job_name: str, path: Path | None = None) -> dict[str, Any]:
    """The bundle's declaration of `job_name`.

    Raises:
        MissingJobError: the bundle has no such job; the message names it and the jobs it has.
    """
    jobs = load_jobs(path)
    if job_name not in jobs:
        raise MissingJobError(
            f"Databricks job {job_name!r} is not declared in {path or bundle_path()} "
            f"(jobs there: {', '.join(sorted(jobs)) or 'none'}); add it to the bundle or fix the DAG"
        )
    return jobs[job_name]


def job_parameters(job_name: str) -> dict[str, str]:
    """The job's parameters and their defaults, as declared in the bundle."""
    return {str(p["name"]): str(p.get("default", "")) for p in job_spec(job_name).get("parameters") or []}


def lakehouse_env() -> str:
    return os.environ.get("LAKEHOUSE_ENV") or "local"


def conn_id() -> str:
    """`databricks_<env>`: the Variable `lakehouse_env` wins over LAKEHOUSE_ENV (templated, so read at run time)."""
    return "databricks_{{ var.value.get('lakehouse_env', '" + lakehouse_env() + "') }}"


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def poll_seconds() -> int:
    return max(1, int(_seconds("RETAIL_AIRFLOW_POLL_SECONDS", 30)))


def lakehouse_home() -> Path:
    return Path(os.environ.get("LAKEHOUSE_HOME") or REPO_ROOT / ".lakehouse")


def failures_path() -> Path:
    return lakehouse_home() / "airflow" / FAILURES_FILE


def _xcom(ti: Any, key: str) -> Any:
    try:
        return ti.xcom_pull(task_ids=ti.task_id, key=key)
    except Exception:  # a callback must never fail on a missing XCom
        return None


def record_failure(context: dict[str, Any]) -> None:
    """Append the failed (or retried) try to `LAKEHOUSE_HOME/airflow/failures.jsonl`.

    One JSON object a line: dag_id, dag_run_id, task_id, try_number, max_tries, event
    (`failed`: the task gave up; `up_for_retry`: a try failed and will be retried), the exception,
    the Databricks run id and run page the operator pushed to XCom, env and host. The ops notebook
    `job_failure_triage` reads this file; `retail_lakehouse.ops.airflow_triage` reads the same facts
    from Airflow's REST API.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    exc = context.get("exception")
    max_tries = getattr(ti, "max_tries", None)
    if max_tries is None:
        max_tries = getattr(getattr(ti, "task", None), "retries", None)
    try_number = getattr(ti, "try_number", None)
    final = max_tries is None or try_number is None or try_number > max_tries
    row = {
        "recorded_at": datetime.now(UTC).isoformat(),
        "event": "failed" if final else "up_for_retry",
        "env": lakehouse_env(),
        "dag_id": getattr(ti, "dag_id", None),
        "dag_run_id": getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "try_number": try_number,
        "max_tries": max_tries,
        "exception": f"{type(exc).__name__}: {exc}"[:2000] if exc is not None else None,
        "databricks_run_id": _xcom(ti, "run_id") if ti is not None else None,
        "databricks_run_page_url": _xcom(ti, "run_page_url") if ti is not None else None,
        "hostname": socket.gethostname(),
    }
    path = failures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:  # one write of one line: appends from tasks do not interleave
        f.write(json.dumps(row, default=str) + "\n")


RUNBOOK_PAGE = "book/failure_handling.md#orchestration-failures"
_SUBJECT = "[{{ var.value.get('lakehouse_env', '<ENV>') }}] Airflow: {{ ti.dag_id }}.{{ ti.task_id }} failed"
_WHAT = (
    "{{ ti.dag_id }}.{{ ti.task_id }} failed after {{ ti.try_number }} tr{{ 'y' if ti.try_number == 1 else 'ies' }}"
    " (retries exhausted) in DAG run {{ run_id }}"
)


def _triage_command() -> str:
    env = "{{ var.value.get('lakehouse_env', '" + lakehouse_env() + "') }}"
    return (
        "papermill ops_notebooks/job_failure_triage.ipynb runs/job_failure_triage-{{ ti.dag_id }}.ipynb"
        f" -p env {env} -p dag_id {{{{ ti.dag_id }}}} -p dag_run_id '{{{{ run_id }}}}'"
    )


def failure_notifiers() -> list[Any]:
    """Slack and e-mail notifiers for a task that failed for good (`on_failure_callback`).

    Each message says which task of which DAG run failed, links the runbook page and gives the
    papermill command of `job_failure_triage` for that DAG run. A notifier that cannot deliver (no
    connection, receiver down) logs the error; it never changes the task's state. Empty when
    `RETAIL_AIRFLOW_NOTIFY=0`, or a provider is not installed (a warning says so).
    """
    import logging

    if os.environ.get("RETAIL_AIRFLOW_NOTIFY", "1") == "0":
        return []
    env = lakehouse_env()
    command = _triage_command()
    out: list[Any] = []
    try:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        text = f":red_circle: {_WHAT}\nRunbook: {RUNBOOK_PAGE}\nTriage: `{command}`"
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": "Airflow task failed: {{ ti.dag_id }}.{{ ti.task_id }}"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _WHAT + "\n*Runbook:* " + RUNBOOK_PAGE}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Triage:*\n```" + command + "```"}},
        ]
        out.append(
            SlackWebhookNotifier(
                slack_webhook_conn_id=os.environ.get("RETAIL_AIRFLOW_SLACK_CONN_ID", "slack_retail_alerts"),
                text=text,
                blocks=blocks,
                timeout=10,
            )
        )
    except ImportError:
        logging.getLogger(__name__).warning("apache-airflow-providers-slack is not installed: no Slack notifier")
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        html = (
            f"<p>{_WHAT}</p><p>Runbook: {RUNBOOK_PAGE}</p><p>Triage:</p><pre>{command}</pre>"
            "<p>Exception: {{ exception | default('see the task log', true) }}</p>"
        )
        out.append(
            SmtpNotifier(
                to=os.environ.get("RETAIL_AIRFLOW_ALERT_EMAIL", "oncall@localhost"),
                from_email=os.environ.get("RETAIL_AIRFLOW_ALERT_FROM", "airflow@localhost"),
                subject=_SUBJECT.replace("<ENV>", env),
                html_content=html,
                smtp_conn_id=os.environ.get("RETAIL_AIRFLOW_SMTP_CONN_ID", "smtp_retail_alerts"),
            )
        )
    except ImportError:
        logging.getLogger(__name__).warning("apache-airflow-providers-smtp is not installed: no e-mail notifier")
    return out


def retries() -> int:
    """Retries of a task: 3 as the runbook promises (`RETAIL_AIRFLOW_RETRIES`: a drill may lower it)."""
    return max(0, int(_seconds("RETAIL_AIRFLOW_RETRIES", RETRIES)))


def default_args() -> dict[str, Any]:
    """Retries as the runbook promises: 3, exponential backoff, capped; failures recorded; a task that
    fails for good notifies Slack and e-mail (`failure_notifiers`)."""
    return {
        "owner": "data-platform",
        "retries": retries(),
        "retry_delay": timedelta(seconds=_seconds("RETAIL_AIRFLOW_RETRY_DELAY_SECONDS", 300)),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=_seconds("RETAIL_AIRFLOW_MAX_RETRY_DELAY_SECONDS", 1800)),
        # record first: a notifier that cannot deliver only logs, the failure record is always written
        "on_failure_callback": [record_failure, *failure_notifiers()],
        "on_retry_callback": record_failure,
    }


def run_job_task(job_name: str, *, execution_timeout: timedelta, **kwargs: Any) -> Any:
    """A `DatabricksRunNowOperator` for a job of the bundle, its parameters passed through from DAG params.

    Raises:
        MissingJobError: at DAG import, when the bundle does not declare `job_name`.
    """
    from airflow.providers.databricks.operators.databricks import DatabricksRunNowOperator

    params = job_parameters(job_name)
    return DatabricksRunNowOperator(
        task_id=f"run_{job_name}",
        job_name=job_name,
        job_parameters={k: "{{ params." + k + " }}" for k in params},
        databricks_conn_id=conn_id(),
        polling_period_seconds=poll_seconds(),
        databricks_retry_limit=int(_seconds("RETAIL_AIRFLOW_API_RETRY_LIMIT", 3)),
        databricks_retry_delay=1,
        execution_timeout=execution_timeout,
        **kwargs,
    )
