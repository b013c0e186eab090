"""Failure notifiers of the DAGs (Slack provider's SlackWebhookNotifier, SMTP provider's SmtpNotifier),
tested against the lakehouse's local receivers: real HTTP and SMTP on 127.0.0.1, started from the
main venv (`lakehouse alerts listen`), connections from AIRFLOW_CONN_* environment variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import MAIN_PYTHON, REPO, conn_json, free_port

DAG_ID = "retail_data_quality_checks"
TASK = f"{DAG_ID}.run_{DAG_ID}"
SLACK_TOKEN = "T0AIRFLOW/B0AIRFLOW/S3cretAirflowSlackToken"


@pytest.fixture(scope="module")
def receivers(tmp_path_factory):
    """`lakehouse alerts listen` on free ports in a home of its own; yields (http_port, smtp_port, received dir)."""
    home = tmp_path_factory.mktemp("alerts-home")
    proc = subprocess.Popen(
        [str(MAIN_PYTHON.parent / "lakehouse"), "alerts", "listen", "--http-port", "0", "--smtp-port", "0"],
        env={**os.environ, "LAKEHOUSE_HOME": str(home)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ports = home / "alerts" / "receivers.json"
    deadline = time.monotonic() + 60
    while not ports.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the receivers did not start: {proc.stdout.read().decode() if proc.stdout else ''}")
        time.sleep(0.2)
    info = json.loads(ports.read_text())
    yield info["http_port"], info["smtp_port"], home / "alerts" / "received"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def received(directory, kind: str) -> list[dict]:
    files = sorted(directory.glob(f"*-{kind}.json")) if directory.is_dir() else []
    return [json.loads(p.read_text()) for p in files]


def test_a_task_failing_for_good_notifies_slack_and_email_once(airflow_db, receivers, monkeypatch, caplog):  # noqa: ARG001
    http_port, smtp_port, directory = receivers
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_RETAIL_ALERTS",
        json.dumps({"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{http_port}/slack/{SLACK_TOKEN}"}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_RETAIL_ALERTS",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                    "extra": {"disable_tls": True, "disable_ssl": True}}),
    )  # fmt: skip
    monkeypatch.setenv("RETAIL_AIRFLOW_RETRIES", "1")
    monkeypatch.setenv("RETAIL_AIRFLOW_RETRY_DELAY_SECONDS", "1")
    monkeypatch.setenv("RETAIL_AIRFLOW_ALERT_EMAIL", "oncall@localhost")
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_LOCAL", conn_json(free_port(), "token"))  # nobody listens
    from airflow.models.dagbag import DagBag

    bag = DagBag(str(REPO / "airflow" / "dags"), include_examples=False)
    assert not bag.import_errors
    dag = bag.dags[DAG_ID]
    dr = dag.test()
    assert dr.state == "failed"

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (received(directory, "slack") and received(directory, "email")):
        time.sleep(0.2)
    slack = [r for r in received(directory, "slack") if DAG_ID in json.dumps(r)]
    mail = [r for r in received(directory, "email") if DAG_ID in json.dumps(r)]
    # 2 tries: the retry is not notified, the final failure is, once per destination
    assert len(slack) == 1 and len(mail) == 1, (slack, mail)
    body = slack[0]["body"]
    assert f"{TASK} failed after 2 tries (retries exhausted)" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    command = (
        f"papermill ops_notebooks/job_failure_triage.ipynb runs/job_failure_triage-{DAG_ID}.ipynb"
        f" -p env local -p dag_id {DAG_ID} -p dag_run_id '{dr.run_id}'"
    )
    assert command in body["text"]
    assert "book/failure_handling.md#orchestration-failures" in body["text"]
    assert mail[0]["subject"] == f"[local] Airflow: {TASK} failed"
    assert mail[0]["rcpt_tos"] == ["oncall@localhost"]
    assert "job_failure_triage" in json.dumps(mail[0])
    # the webhook token travels in the URL path only, which the receiver does not store
    assert SLACK_TOKEN not in json.dumps(slack + mail)


def test_notifiers_can_be_turned_off(monkeypatch):
    from _retail_common import default_args, failure_notifiers

    monkeypatch.setenv("RETAIL_AIRFLOW_NOTIFY", "0")
    assert failure_notifiers() == []
    assert len(default_args()["on_failure_callback"]) == 1
    monkeypatch.delenv("RETAIL_AIRFLOW_NOTIFY")
    kinds = [type(n).__name__ for n in failure_notifiers()]
    assert kinds == ["SlackWebhookNotifier", "SmtpNotifier"]


def test_the_airflow_drill_points_the_notifiers_at_listening_receivers(receivers, tmp_path):
    from failed_dag_run import local_receiver_conns

    http_port, smtp_port, directory = receivers
    conns = local_receiver_conns(directory.parent.parent)
    assert json.loads(conns["AIRFLOW_CONN_SLACK_RETAIL_ALERTS"])["password"].startswith(f"http://127.0.0.1:{http_port}/slack/")
    assert json.loads(conns["AIRFLOW_CONN_SMTP_RETAIL_ALERTS"])["port"] == smtp_port
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "receivers.json").write_text(json.dumps({"pid": 2**22 + 12345, "http_port": 1, "smtp_port": 2}))
    assert local_receiver_conns(tmp_path) == {}  # a stale file of a process gone: nobody listens
