"""The DAGs end to end against the local workspace (a separate process of the main venv).

Order matters (one lakehouse for the module): a drill on ingestion (workspace unreachable: retried
with growing delays, the DAG run fails cleanly; fixed, the task cleared, the same run succeeds),
then transformation and quality for real, then the triage of the drill's run through a real
Airflow api-server.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time

import pytest

from conftest import MAIN_PYTHON, REPO, api_get, conn_json, free_port

pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(dag_id: str):
    from airflow.models.dagbag import DagBag

    bag = DagBag(str(REPO / "airflow" / "dags"), include_examples=False)
    assert not bag.import_errors
    return bag.dags[dag_id]


def _history(dag_id: str, run_id: str, task_id: str):
    """Every try of a task instance, oldest first (Airflow 3 keeps earlier tries in task_instance_history)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as s:
        old = s.scalars(
            select(TaskInstanceHistory).where(
                TaskInstanceHistory.dag_id == dag_id,
                TaskInstanceHistory.run_id == run_id,
                TaskInstanceHistory.task_id == task_id,
            )
        ).all()
        cur = s.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        )
        tries = sorted(((h.try_number, h.state, h.start_date, h.end_date) for h in old), key=lambda x: x[0])
        return tries, (cur.try_number, cur.state, cur.start_date, cur.end_date, cur.max_tries)


def _xcom(dag_id: str, run_id: str, task_id: str, key: str):
    from airflow.models.xcom import XComModel
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as s:
        row = s.scalar(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id, XComModel.key == key
            )
        )
        return None if row is None else json.loads(row.value) if isinstance(row.value, str) else row.value


def clear_and_resume(dag, run_id: str, task_id: str) -> str:
    """`airflow tasks clear` of one task, then run the same DAG run to its end like `dag.test()` does."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import SerializedDAG
    from airflow.settings import Session
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from sqlalchemy import select

    session = Session()
    dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id))
    tis = [ti for ti in dr.get_task_instances(session=session) if ti.task_id == task_id]
    clear_task_instances(tis, session, dag_run_state=DagRunState.RUNNING)
    session.commit()
    dr.dag = SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(dag))
    while dr.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in [x for x in dr.get_task_instances(session=session) if x.state == TaskInstanceState.SCHEDULED]:
            with contextlib.suppress(Exception):  # the DAG run's state tells
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
        if not any(x.state not in State.finished for x in dr.get_task_instances(session=session)):
            session.expire_all()
            dr.update_state(session=session)
            session.commit()
        time.sleep(0.5)
    state = dr.state
    session.close()
    return state


def _failures(lakehouse_home, dag_id, run_id):
    path = lakehouse_home / "airflow" / "failures.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["dag_id"] == dag_id and r["dag_run_id"] == run_id]


@pytest.fixture(scope="module")
def drill_run(workspace, lakehouse_home):
    """Ingestion with the workspace unreachable: 1 + 3 tries, growing delays, a cleanly failed run."""
    host, port, token = workspace
    os.environ["AIRFLOW_CONN_DATABRICKS_LOCAL"] = conn_json(free_port(), token)  # nobody listens there
    dag = _dag("retail_ingestion")
    t0 = time.monotonic()
    dr = dag.test()
    elapsed = time.monotonic() - t0
    os.environ["AIRFLOW_CONN_DATABRICKS_LOCAL"] = conn_json(port, token)
    return dag, dr.run_id, dr.state, elapsed


def test_unreachable_workspace_is_retried_with_growing_delays_then_fails_cleanly(drill_run, lakehouse_home):
    dag, run_id, state, elapsed = drill_run
    assert state == "failed"
    tries, (try_number, ti_state, *_rest, max_tries) = _history(dag.dag_id, run_id, "run_retail_ingestion")
    assert ti_state == "failed" and try_number == 4 and max_tries == 3
    assert [t[0] for t in tries] == [1, 2, 3] and all(t[1] in ("failed", "up_for_retry") for t in tries)
    # gaps between a failed try's end and the next try's start: retry_delay 1 s doubled each time
    starts = [t[2] for t in tries] + [_rest[0]]
    ends = [t[3] for t in tries]
    gaps = [(starts[i + 1] - ends[i]).total_seconds() for i in range(3)]
    assert gaps[0] >= 1 and gaps[1] >= 2 and gaps[2] >= 4, gaps
    assert gaps[2] > gaps[0], gaps
    rows = _failures(lakehouse_home, dag.dag_id, run_id)
    assert [r["event"] for r in rows] == ["up_for_retry"] * 3 + ["failed"]
    # dag.test() runs tasks in-process and Airflow 3.1 then passes no `exception` to callbacks (a real
    # worker does): the record holds it when present, and the error itself is checked below.
    assert all(r["exception"] is None or "API requests to Databricks failed" in r["exception"] for r in rows)
    assert rows[-1]["databricks_run_id"] is None  # the job never started


def test_unreachable_workspace_error_is_clear(workspace):
    from airflow.exceptions import AirflowException
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    _, _, token = workspace
    dead = free_port()
    os.environ["AIRFLOW_CONN_DATABRICKS_DEAD"] = conn_json(dead, token)
    hook = DatabricksHook("databricks_dead", retry_limit=2, retry_delay=0.1)
    with pytest.raises(AirflowException, match=r"API requests to Databricks failed 2 times .*Connection refused"):
        hook.find_job_id_by_name("retail_ingestion")


def test_cleared_after_the_fix_the_same_run_succeeds(drill_run, workspace, lakehouse_home):
    dag, run_id, _, _ = drill_run
    host, _, token = workspace
    assert clear_and_resume(dag, run_id, "run_retail_ingestion") == "success"
    tries, (try_number, ti_state, *_rest) = _history(dag.dag_id, run_id, "run_retail_ingestion")
    assert ti_state == "success" and try_number == 5
    db_run = _xcom(dag.dag_id, run_id, "run_retail_ingestion", "run_id")
    run = api_get(host, token, f"/api/2.2/jobs/runs/get?run_id={db_run}")
    assert run["state"]["result_state"] == "SUCCESS"
    params = {p["name"]: p["value"] for p in run["job_parameters"]}
    assert params["max_files_per_trigger"] == "50" and set(params) == set(dag.params)  # the DAG's params passed on
    assert {t["task_key"] for t in run["tasks"]} >= {"ingest_orders", "ingest_pos_events"}
    assert (lakehouse_home / "runs").is_dir()


@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [("retail_transformation", None), ("retail_data_quality_checks", {"business_date": ""})],
)
def test_dag_runs_end_to_end(drill_run, workspace, dag_id, conf):
    host, _, token = workspace
    dag = _dag(dag_id)
    dr = dag.test(run_conf=conf)
    assert dr.state == "success"
    db_run = _xcom(dag_id, dr.run_id, f"run_{dag_id}", "run_id")
    run = api_get(host, token, f"/api/2.2/jobs/runs/get?run_id={db_run}")
    assert run["run_name"] == dag_id and run["state"]["result_state"] == "SUCCESS"
    assert all(t["state"]["result_state"] == "SUCCESS" for t in run["tasks"])


def test_triage_reads_the_failed_run_from_airflows_api(drill_run, api_server, lakehouse_home):
    """The library part of `job_failure_triage` for a DAG run, in the MAIN venv, against a real api-server."""
    dag, run_id, _, _ = drill_run
    script = f"""
import json
from retail_lakehouse.ops.airflow_triage import AirflowApi, triage_dag_run, recorded_failures
api = AirflowApi({api_server!r}, username="ops", password="ops-secret")
t = triage_dag_run({dag.dag_id!r}, {run_id!r}, api=api)
print(json.dumps({{"state": t.state, "rows": t.rows(), "summary": t.summary(),
                  "tries": [x["state"] for x in t.tasks[0].tries],
                  "recorded": [r["event"] for r in recorded_failures(dag_id={dag.dag_id!r})]}}))
"""
    out = subprocess.run(
        [str(MAIN_PYTHON), "-c", script],
        env={**os.environ, "LAKEHOUSE_HOME": str(lakehouse_home)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["state"] == "success"  # cleared and re-run after the drill
    (row,) = got["rows"]
    assert row["task_id"] == "run_retail_ingestion" and row["try_number"] == 5 and row["state"] == "success"
    assert all(s in ("failed", "up_for_retry") for s in got["tries"][:4]) and got["tries"][-1] == "success", got["tries"]
    assert isinstance(row["databricks_run_id"], int) and row["run_page_url"].startswith("file://")
    assert f"-p job_run_id {row['databricks_run_id']}" in row["diagnosis"]
    assert got["recorded"][:4] == ["up_for_retry"] * 3 + ["failed"]
