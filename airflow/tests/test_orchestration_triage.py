"""Orchestration failure end to end: a DAG run that fails for good, triaged by the ops notebook.

The drill `airflow/drills/failed_dag_run.py` (the one the runbook site shows) takes the store
database away and runs the `retail_ingestion` DAG: each try launches a Databricks run on the local
workspace, which fails; Airflow retries once, then gives up. Then `job_failure_triage.ipynb` runs
with papermill in the MAIN venv, with `-p dag_id ... -p dag_run_id ...`, against the real Airflow
api-server and the same workspace.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import MAIN_PYTHON, REPO, api_get

pytestmark = pytest.mark.usefixtures("airflow_db")

PASSWORD = "ops-secret"  # the api_server fixture's user `ops`


def _recorded(lakehouse_home, run_id: str) -> list[dict]:
    path = lakehouse_home / "airflow" / "failures.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [r for r in rows if r["dag_run_id"] == run_id]


@pytest.fixture(scope="module")
def failed_dag_run(workspace, lakehouse_home):
    """The drill's DAG run, with the Databricks run of each try (as the DAG's callbacks recorded them)."""
    import failed_dag_run as drill

    result = drill.run(lakehouse_home)
    assert (lakehouse_home / "sources" / "store_oltp.sqlite").is_file()  # put back
    result["db_runs"] = [r["databricks_run_id"] for r in _recorded(lakehouse_home, result["run_id"])]
    return result


def test_drill_fails_the_dag_run_with_a_failed_databricks_run_per_try(failed_dag_run, workspace, lakehouse_home):
    host, _, token = workspace
    assert failed_dag_run["state"] == "failed" and failed_dag_run["tries"] == 2
    rows = _recorded(lakehouse_home, failed_dag_run["run_id"])
    assert [(r["try_number"], r["event"]) for r in rows] == [(1, "up_for_retry"), (2, "failed")]
    db_runs = failed_dag_run["db_runs"]
    assert len(set(db_runs)) == 2 and all(isinstance(x, int) for x in db_runs), db_runs  # one Databricks run a try
    for db_run in db_runs:
        run = api_get(host, token, f"/api/2.2/jobs/runs/get?run_id={db_run}")
        assert run["run_name"] == "retail_ingestion" and run["state"]["result_state"] == "FAILED"
        failed = {t["task_key"] for t in run["tasks"] if t["state"].get("result_state") == "FAILED"}
        assert "ingest_orders" in failed and all(t.get("attempt_number", 0) == 0 for t in run["tasks"])
    # the job's own retries are back after the drill
    job = api_get(host, token, "/api/2.2/jobs/list?name=retail_ingestion")["jobs"][0]
    settings = api_get(host, token, f"/api/2.2/jobs/get?job_id={job['job_id']}")["settings"]
    assert {t["max_retries"] for t in settings["tasks"]} == {2}


def test_triage_notebook_names_the_failed_task_its_tries_and_its_databricks_run(
    failed_dag_run, api_server, lakehouse_home, tmp_path
):
    dag_id, run_id = failed_dag_run["dag_id"], failed_dag_run["run_id"]
    out = tmp_path / "triage.ipynb"
    env = {
        **os.environ,
        "LAKEHOUSE_HOME": str(lakehouse_home),
        "LAKEHOUSE_ENV": "local",
        "AIRFLOW_API_URL": api_server,
        "AIRFLOW_API_USERNAME": "ops",
        "AIRFLOW_API_PASSWORD": PASSWORD,
    }
    proc = subprocess.run(  # noqa: S603
        [str(MAIN_PYTHON), "-m", "papermill", str(REPO / "ops_notebooks" / "job_failure_triage.ipynb"), str(out),
         "-p", "dag_id", dag_id, "-p", "dag_run_id", run_id, "-k", "python3", "--cwd", str(REPO / "ops_notebooks"),
         "--no-progress-bar"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    raw = out.read_text()
    assert PASSWORD not in raw  # the secret stays in the environment
    nb = json.loads(raw)
    text = "\n".join(
        "".join(o.get("text", "")) + "".join((o.get("data") or {}).get("text/plain", ""))
        + "".join((o.get("data") or {}).get("text/markdown", ""))
        for c in nb["cells"] for o in c.get("outputs", [])
    )
    first, last = failed_dag_run["db_runs"]
    assert (
        f"DIAGNOSIS (source_unreachable): DAG run {dag_id}/{run_id} failed: task run_retail_ingestion failed "
        f"at try 2 of 2; its Databricks run {last}." in text
    )
    assert "Cause (databricks run): source unreachable - SourceError: source store_oltp is unreachable" in text
    # every try with the Databricks run it launched; the last one read through the workspace
    assert "try 1: failed" in text and f", Databricks run {first}" in text and f", Databricks run {last}" in text
    assert f"Run {last} of retail_ingestion ended FAILED" in text
    assert f"-p job_run_id {last} -p env local" in text
    assert f"airflow tasks clear {dag_id} -t '^run_retail_ingestion$'" in text
    assert "text/html" in raw and "plotly" in raw  # the timeline of tries
    # the audit row, through the workspace, as every ops notebook writes it
    script = (
        "import json\n"
        "from retail_lakehouse.ops._delta import sql\n"
        "from retail_lakehouse.databricks.workspace import connect\n"
        "rows = sql(connect('local'), \"SELECT operation, outcome, details FROM retail_datalake.local_monitoring.ops_audit "
        "WHERE notebook = 'job_failure_triage'\", env='local')\n"
        "print(json.dumps(rows.to_dict('records'), default=str))\n"
    )
    proc = subprocess.run([str(MAIN_PYTHON), "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)  # noqa: S603
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [r for r in json.loads(proc.stdout.strip().splitlines()[-1]) if r["operation"] == "triage:airflow"]
    details = json.loads(row["details"])
    assert row["outcome"] == "DRY_RUN" and details["dag_run_id"] == run_id
    assert details["failed_task"] == "run_retail_ingestion" and details["category"] == "source_unreachable"
