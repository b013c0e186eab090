"""The local workspace through the real databricks-sdk: SQL statements, warehouses, jobs, runs,
repairs, clusters, query history, workspace files, auth and malformed requests, system tables."""

from __future__ import annotations

import ast
import base64
import http.client
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from databricks.sdk.errors import (
    BadRequest,
    InvalidParameterValue,
    NotFound,
    PermissionDenied,
    ResourceAlreadyExists,
    Unauthenticated,
)
from databricks.sdk.service.jobs import NotebookTask, SubmitTask, Task, TaskDependency
from databricks.sdk.service.sql import StatementParameterListItem, StatementState

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUNDLE = FIXTURES / "databricks_test.yml"
NOTEBOOKS = FIXTURES / "notebooks"
LIB = Path(__file__).resolve().parents[2] / "lib" / "retail_lakehouse"
WH = "local-warehouse"
SLOW_SQL = "SELECT sum(id * 2) AS s FROM range(400000000)"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(isolated_home):
    """A local workspace on a fresh LAKEHOUSE_HOME, serving the test bundle, with 4-row chunks."""
    from retail_lakehouse import local as local_workspace

    workspace = local_workspace.start(bundle_path=BUNDLE, chunk_rows=4)
    yield workspace
    local_workspace.stop()


@pytest.fixture(scope="module")
def w(ws):
    from retail_lakehouse.databricks.workspace import connect

    return connect("local")


@pytest.fixture(scope="module")
def jobs(w):
    return {j.settings.name: j.job_id for j in w.jobs.list()}


@pytest.fixture(scope="module")
def parallel_run(w, jobs):
    """One finished run of the bundle's `Parallel job` (job cluster `small`, 1 worker, Standard_DS3_v2)."""
    return w.jobs.run_now(jobs["Parallel job"]).result(timeout=timedelta(minutes=3))


def raw(ws, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=30)
    hdrs = {"Authorization": f"Bearer {ws.token}", "Content-Type": "application/json"}
    hdrs.update(headers or {})
    conn.request(method, path, body=body, headers={k: v for k, v in hdrs.items() if v is not None})
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


# ----------------------------------------------------------------------------- warehouses and statements


def test_warehouses(w):
    listed = list(w.warehouses.list())
    assert [x.id for x in listed] == [WH]
    assert w.warehouses.get(WH).state.value == "RUNNING"
    with pytest.raises(NotFound):
        w.warehouses.get("nope")


def test_statement_sync_types_and_values(w):
    r = w.statement_execution.execute_statement(
        "SELECT 1 AS i, CAST(2 AS INT) AS n, 1.5D AS d, CAST(1.25 AS DECIMAL(10,2)) AS m, true AS b, "
        "DATE'2024-03-01' AS dt, TIMESTAMP'2024-03-01 12:30:00' AS ts, 'x' AS s, CAST(NULL AS STRING) AS z, "
        "array(1, 2) AS a, map('k', 1) AS mp, named_struct('f', 1, 'g', 'h') AS st",
        WH,
        wait_timeout="30s",
    )
    assert r.status.state == StatementState.SUCCEEDED, r.status
    cols = {c.name: (c.type_name.value, c.type_text) for c in r.manifest.schema.columns}
    assert cols["i"] == ("INT", "INT") and cols["n"] == ("INT", "INT")
    assert cols["d"][0] == "DOUBLE" and cols["m"] == ("DECIMAL", "DECIMAL(10,2)") and cols["b"][0] == "BOOLEAN"
    assert cols["dt"][0] == "DATE" and cols["ts"][0] == "TIMESTAMP" and cols["s"][0] == "STRING"
    assert cols["a"] == ("ARRAY", "ARRAY<INT>") and cols["mp"][0] == "MAP"
    assert cols["st"] == ("STRUCT", "STRUCT<f: INT, g: STRING>")
    row = r.result.data_array[0]
    assert row[:6] == ["1", "2", "1.5", "1.25", "true", "2024-03-01"]
    assert row[6].startswith("2024-03-01T12:30:00") and row[7] == "x" and row[8] is None
    assert json.loads(row[9]) == [1, 2] and json.loads(row[10]) == {"k": 1} and json.loads(row[11]) == {"f": 1, "g": "h"}
    assert r.manifest.total_row_count == 1 and r.manifest.format.value == "JSON_ARRAY"


def test_run_sql_types_the_frame(w):
    from retail_lakehouse.databricks.statements import run_sql

    df = run_sql(
        w,
        "SELECT id, id * 1.5D AS x, id % 2 = 0 AS even, DATE'2024-01-01' AS d, array(id) AS a FROM range(10)",
    )
    assert len(df) == 10  # auto: a query of a table, so EXTERNAL_LINKS + ARROW_STREAM
    assert str(df["id"].dtype) == "Int64" and str(df["x"].dtype) == "float64"
    assert str(df["even"].dtype) == "boolean" and str(df["d"].dtype).startswith("datetime64")
    assert df["a"].iloc[3] == [3] and df["id"].tolist() == list(range(10))


def test_statement_async_then_polling(w):
    r = w.statement_execution.execute_statement("SELECT 42 AS answer", WH, wait_timeout="0s")
    assert r.status.state in (StatementState.PENDING, StatementState.RUNNING, StatementState.SUCCEEDED)
    deadline = time.monotonic() + 30
    while r.status.state in (StatementState.PENDING, StatementState.RUNNING) and time.monotonic() < deadline:
        time.sleep(0.05)
        r = w.statement_execution.get_statement(r.statement_id)
    assert r.status.state == StatementState.SUCCEEDED
    assert r.result.data_array == [["42"]]


def test_named_parameters(w):
    r = w.statement_execution.execute_statement(
        "SELECT :n + 1 AS n, :s AS s, :d AS d, :flag AS flag",
        WH,
        parameters=[
            StatementParameterListItem(name="n", value="41", type="BIGINT"),
            StatementParameterListItem(name="s", value="hello"),
            StatementParameterListItem(name="d", value="2024-02-29", type="DATE"),
            StatementParameterListItem(name="flag", value="true", type="BOOLEAN"),
        ],
        wait_timeout="30s",
    )
    assert r.status.state == StatementState.SUCCEEDED, r.status
    assert r.result.data_array == [["42", "hello", "2024-02-29", "true"]]


def test_failing_statement_reports_the_sql_error(w):
    from retail_lakehouse.core.errors import SqlError
    from retail_lakehouse.databricks.statements import run_sql

    r = w.statement_execution.execute_statement("SELECT * FROM no_such_table_anywhere", WH, wait_timeout="30s")
    assert r.status.state == StatementState.FAILED
    assert r.status.error.error_code.value == "BAD_REQUEST"
    assert "no_such_table_anywhere" in r.status.error.message
    with pytest.raises(SqlError, match="no_such_table_anywhere"):
        run_sql(w, "SELECT * FROM no_such_table_anywhere")


def test_bad_requests_of_statements(w):
    with pytest.raises(InvalidParameterValue, match="wait_timeout"):
        w.statement_execution.execute_statement("SELECT 1", WH, wait_timeout="3s")
    with pytest.raises(InvalidParameterValue, match="warehouse"):
        w.statement_execution.execute_statement("SELECT 1", "other-warehouse")
    with pytest.raises(NotFound):
        w.statement_execution.get_statement("00000000-0000-0000-0000-000000000000")


def test_cancel_statement(w):
    r = w.statement_execution.execute_statement(SLOW_SQL, WH, wait_timeout="0s")
    w.statement_execution.cancel_execution(r.statement_id)
    assert w.statement_execution.get_statement(r.statement_id).status.state == StatementState.CANCELED


def test_on_wait_timeout_cancel(w):
    from databricks.sdk.service.sql import ExecuteStatementRequestOnWaitTimeout

    r = w.statement_execution.execute_statement(
        SLOW_SQL + " WHERE id > 7", WH, wait_timeout="5s", on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CANCEL
    )
    assert r.status.state in (StatementState.CANCELED, StatementState.SUCCEEDED)  # SUCCEEDED on a fast machine


def test_multi_chunk_result(w):
    r = w.statement_execution.execute_statement("SELECT id FROM range(10)", WH, wait_timeout="30s")
    m = r.manifest
    assert m.total_row_count == 10 and m.total_chunk_count == 3
    assert [(c.chunk_index, c.row_offset, c.row_count) for c in m.chunks] == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert r.result.chunk_index == 0 and r.result.next_chunk_index == 1
    assert r.result.next_chunk_internal_link == f"/api/2.0/sql/statements/{r.statement_id}/result/chunks/1"
    rows = list(r.result.data_array)
    n = r.result.next_chunk_index
    while n is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(r.statement_id, n)
        rows += chunk.data_array
        n = chunk.next_chunk_index
    assert [int(x[0]) for x in rows] == list(range(10))
    with pytest.raises(InvalidParameterValue):
        w.statement_execution.get_statement_result_chunk_n(r.statement_id, 3)


def test_query_history(w):
    from retail_lakehouse.databricks.workspace import query_history

    w.statement_execution.execute_statement("SELECT 'history marker' AS m", WH, wait_timeout="30s")
    w.statement_execution.execute_statement("SELECT * FROM missing_for_history", WH, wait_timeout="30s")
    df = query_history(w, max_results=500)
    marker = df[df["query_text"] == "SELECT 'history marker' AS m"].iloc[0]
    assert marker["status"] == "FINISHED" and marker["user_name"] == "local-user" and marker["rows_produced"] == 1
    assert marker["duration_ms"] >= 0 and marker["end_time"] >= marker["start_time"]
    failed = query_history(w, statuses=["FAILED"])
    assert "SELECT * FROM missing_for_history" in failed["query_text"].tolist()
    assert set(failed["status"]) == {"FAILED"}
    page = w.query_history.list(max_results=1)
    assert len(page.res) == 1 and page.has_next_page and page.next_page_token
    second = w.query_history.list(max_results=1, page_token=page.next_page_token)
    assert second.res[0].query_id != page.res[0].query_id


# ----------------------------------------------------------------------------- auth and malformed requests


def test_wrong_token_is_permission_denied(ws):
    from retail_lakehouse.databricks.workspace import _local_client

    with pytest.raises(PermissionDenied):
        list(_local_client(ws.host, "dapi-wrong").warehouses.list())


def test_missing_token_is_unauthenticated(ws):
    status, body = raw(ws, "GET", "/api/2.0/sql/warehouses", headers={"Authorization": None})
    assert status == 401 and body["error_code"] == "UNAUTHENTICATED"
    import requests
    from databricks.sdk.errors import _Parser

    response = requests.get(f"{ws.host}/api/2.0/sql/warehouses", timeout=30)
    assert isinstance(_Parser().get_api_error(response), Unauthenticated)  # as the SDK maps it


def test_malformed_oversized_and_unknown(ws):
    status, body = raw(ws, "POST", "/api/2.0/sql/statements", body=b"{not json")
    assert status == 400 and body["error_code"] == "MALFORMED_REQUEST"
    status, body = raw(ws, "GET", "/api/2.0/no/such/endpoint")
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"
    conn = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=30)
    conn.putrequest("POST", "/api/2.0/sql/statements")
    conn.putheader("Authorization", f"Bearer {ws.token}")
    conn.putheader("Content-Length", str(11 * 1024 * 1024))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    conn.close()


def test_client_disconnecting_mid_statement_does_not_kill_the_server(ws, w):
    body = json.dumps({"statement": SLOW_SQL, "warehouse_id": WH, "wait_timeout": "50s"}).encode()
    with socket.create_connection(("127.0.0.1", ws.port)) as s:
        s.sendall(
            b"POST /api/2.0/sql/statements HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ws.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
    r = w.statement_execution.execute_statement("SELECT 7 AS still_here", WH, wait_timeout="30s")
    assert r.result.data_array == [["7"]]


# ----------------------------------------------------------------------------- jobs


def test_jobs_list_paginates_and_get(ws, w, jobs):
    assert {"Parallel job", "Fail job", "Params job", "Retry job", "Chain job"} <= set(jobs)
    status, page = raw(ws, "GET", "/api/2.2/jobs/list?limit=2")
    assert status == 200 and len(page["jobs"]) == 2 and page["has_more"] and page["next_page_token"]
    status, page2 = raw(ws, "GET", f"/api/2.1/jobs/list?limit=2&page_token={page['next_page_token']}")
    assert {j["job_id"] for j in page2["jobs"]}.isdisjoint({j["job_id"] for j in page["jobs"]})
    assert len(list(w.jobs.list(limit=2))) == len(jobs)  # the SDK follows next_page_token
    assert [j.job_id for j in w.jobs.list(name="parallel JOB")] == [jobs["Parallel job"]]
    job = w.jobs.get(jobs["Parallel job"])
    assert [t.task_key for t in job.settings.tasks] == ["left", "right", "join"]
    assert job.settings.job_clusters[0].new_cluster.node_type_id == "Standard_DS3_v2"
    with pytest.raises(NotFound, match="does not exist"):  # the SDK maps Databricks' 400 "does not exist"
        w.jobs.get(123)


def test_create_reset_delete(w):
    from databricks.sdk.service.jobs import JobSettings

    task = Task(task_key="only", notebook_task=NotebookTask(notebook_path=str(NOTEBOOKS / "noop.ipynb")))
    job_id = w.jobs.create(name="made by api", tasks=[task]).job_id
    assert w.jobs.get(job_id).settings.name == "made by api"
    w.jobs.reset(job_id, JobSettings(name="renamed", tasks=[task]))
    assert w.jobs.get(job_id).settings.name == "renamed"
    w.jobs.delete(job_id)
    with pytest.raises(NotFound):
        w.jobs.get(job_id)
    with pytest.raises((InvalidParameterValue, NotFound), match="does not exist"):
        w.jobs.create(name="bad", tasks=[Task(task_key="x", notebook_task=NotebookTask(notebook_path="/nowhere/nb"))])


def test_run_now_and_wait(w, jobs, parallel_run):
    run = parallel_run
    assert run.state.life_cycle_state.value == "TERMINATED" and run.state.result_state.value == "SUCCESS"
    assert run.job_id == jobs["Parallel job"]
    tasks = {t.task_key: t for t in run.tasks}
    assert set(tasks) == {"left", "right", "join"}
    assert all(t.state.result_state.value == "SUCCESS" and t.attempt_number == 0 for t in tasks.values())
    assert tasks["join"].start_time >= max(tasks["left"].end_time, tasks["right"].end_time)
    assert run.start_time <= tasks["left"].start_time and run.end_time >= tasks["join"].end_time
    assert len({t.cluster_instance.cluster_id for t in tasks.values()}) == 1
    listed = list(w.jobs.list_runs(job_id=jobs["Parallel job"]))
    assert run.run_id in [r.run_id for r in listed]
    out = w.jobs.get_run_output(tasks["left"].run_id)
    assert out.error is None and out.notebook_output.result == "1"
    assert out.metadata.run_page_url.endswith("left.ipynb")
    with pytest.raises(InvalidParameterValue, match="multiple tasks"):
        w.jobs.get_run_output(run.run_id)


def test_failed_run_output_and_repair(w, tmp_path):
    marker = tmp_path / "attempts.txt"
    tasks = [
        Task(
            task_key="flaky",
            max_retries=0,
            notebook_task=NotebookTask(
                notebook_path=str(NOTEBOOKS / "fail_until.ipynb"),
                base_parameters={"marker_path": str(marker), "succeed_on": "2"},
            ),
        ),
        Task(
            task_key="after",
            depends_on=[TaskDependency(task_key="flaky")],
            notebook_task=NotebookTask(notebook_path=str(NOTEBOOKS / "noop.ipynb")),
        ),
    ]
    job_id = w.jobs.create(name="repairable", tasks=tasks).job_id
    run = w.jobs.run_now(job_id).result(timeout=timedelta(minutes=3))
    assert run.state.result_state.value == "FAILED"
    by_key = {t.task_key: t for t in run.tasks}
    assert by_key["flaky"].state.result_state.value == "FAILED"
    assert by_key["after"].state.result_state.value == "UPSTREAM_FAILED"
    out = w.jobs.get_run_output(by_key["flaky"].run_id)
    assert out.error == "ValueError: transient failure on attempt 1"
    assert "ValueError" in out.error_trace and "\x1b[" not in out.error_trace

    repaired = w.jobs.repair_run(run.run_id, rerun_all_failed_tasks=True).result(timeout=timedelta(minutes=3))
    assert repaired.run_id == run.run_id
    assert repaired.state.result_state.value == "SUCCESS", repaired.state
    assert {t.task_key: t.state.result_state.value for t in repaired.tasks} == {"flaky": "SUCCESS", "after": "SUCCESS"}
    assert [h.type.value for h in repaired.repair_history] == ["ORIGINAL", "REPAIR"]
    assert {t.run_id for t in repaired.tasks}.isdisjoint({t.run_id for t in run.tasks})
    assert marker.read_text() == "2"


def test_submit_and_cancel(w):
    tasks = [
        SubmitTask(
            task_key="slow",
            notebook_task=NotebookTask(
                notebook_path=str(NOTEBOOKS / "ok_query.ipynb"), base_parameters={"sleep_seconds": "3"}
            ),
        ),
        SubmitTask(
            task_key="next",
            depends_on=[TaskDependency(task_key="slow")],
            notebook_task=NotebookTask(notebook_path=str(NOTEBOOKS / "noop.ipynb")),
        ),
    ]
    waiter = w.jobs.submit(run_name="one-time", tasks=tasks)
    run_id = waiter.run_id if hasattr(waiter, "run_id") else waiter.response.run_id
    w.jobs.cancel_run(run_id).result(timeout=timedelta(minutes=2))
    run = w.jobs.get_run(run_id)
    assert run.state.result_state.value == "CANCELED" and run.run_type.value == "SUBMIT_RUN" and run.job_id is None
    assert {t.task_key: t.state.result_state.value for t in run.tasks}["next"] == "CANCELED"


def test_run_job_helper_and_get_run(w):
    from retail_lakehouse.databricks.workspace import get_run, run_job

    run = run_job(w, "Params job", {"x": 4}, progress=True, poll_seconds=0.3)
    assert run.state.result_state.value == "SUCCESS"
    detail = get_run(w, run.run_id)
    assert detail["tasks"][0]["task_key"] == "query" and detail["tasks"][0]["error"] is None
    assert {p["name"]: p["value"] for p in detail["job_parameters"]}["x"] == "4"


# ----------------------------------------------------------------------------- clusters


def test_clusters_and_events_of_a_run(w, parallel_run):
    from retail_lakehouse.databricks.workspace import cluster_events

    cluster_id = parallel_run.tasks[0].cluster_instance.cluster_id
    assert cluster_id in [c.cluster_id for c in w.clusters.list()]
    c = w.clusters.get(cluster_id)
    assert c.state.value == "TERMINATED" and c.cluster_source.value == "JOB"
    assert c.node_type_id == "Standard_DS3_v2" and c.driver_node_type_id == "Standard_DS3_v2" and c.num_workers == 1
    assert c.cluster_name == f"job-{parallel_run.job_id}-run-{parallel_run.run_id}"
    assert parallel_run.start_time <= c.start_time <= c.terminated_time <= parallel_run.end_time
    events = cluster_events(w, cluster_id)
    assert events["type"].tolist() == ["CREATING", "RUNNING", "TERMINATING"]
    assert events["timestamp"].is_monotonic_increasing
    assert events["details"].iloc[-1]["reason"]["code"] == "JOB_FINISHED"
    with pytest.raises((InvalidParameterValue, NotFound)):
        w.clusters.get("0000-000000-nothere")


# ----------------------------------------------------------------------------- workspace files


def test_workspace_files_round_trip(w):
    from databricks.sdk.service.workspace import ImportFormat, Language, ObjectType

    content = (NOTEBOOKS / "noop.ipynb").read_bytes()
    w.workspace.mkdirs("/Users/local-user/ops")
    w.workspace.import_(
        "/Users/local-user/ops/nb", content=base64.b64encode(content).decode(), format=ImportFormat.JUPYTER
    )
    w.workspace.import_(
        "/Users/local-user/ops/q.sql",
        content=base64.b64encode(b"SELECT 1").decode(),
        format=ImportFormat.SOURCE,
        language=Language.SQL,
    )
    listed = {o.path: o.object_type for o in w.workspace.list("/Users/local-user/ops")}
    assert listed == {"/Users/local-user/ops/nb": ObjectType.NOTEBOOK, "/Users/local-user/ops/q.sql": ObjectType.NOTEBOOK}
    assert w.workspace.get_status("/Users/local-user/ops").object_type == ObjectType.DIRECTORY
    exported = w.workspace.export("/Users/local-user/ops/nb")
    assert base64.b64decode(exported.content) == content
    with pytest.raises(ResourceAlreadyExists):
        w.workspace.import_("/Users/local-user/ops/nb", content=base64.b64encode(b"{}").decode(), format=ImportFormat.JUPYTER)
    # a notebook imported into the workspace can be a job's task
    job_id = w.jobs.create(
        name="from workspace", tasks=[Task(task_key="t", notebook_task=NotebookTask(notebook_path="/Users/local-user/ops/nb"))]
    ).job_id
    w.jobs.delete(job_id)
    with pytest.raises(BadRequest):
        w.workspace.delete("/Users/local-user/ops")  # not empty
    w.workspace.delete("/Users/local-user/ops", recursive=True)
    with pytest.raises(NotFound):
        w.workspace.get_status("/Users/local-user/ops/nb")


# ----------------------------------------------------------------------------- system tables


def test_system_tables_from_local_runs(w, parallel_run):
    from retail_lakehouse.databricks.statements import run_sql
    from retail_lakehouse.databricks.workspace import billing_usage

    usage = run_sql(
        w,
        "SELECT sku_name, cloud, usage_unit, usage_quantity, usage_metadata.cluster_id AS cluster_id, "
        "usage_metadata.job_id AS job_id, billing_origin_product FROM system.billing.usage "
        "WHERE usage_metadata.job_run_id = :run",
        {"run": str(parallel_run.run_id)},
    )
    assert len(usage) == 1
    row = usage.iloc[0]
    assert row["sku_name"] == "PREMIUM_JOBS_COMPUTE" and row["cloud"] == "AZURE" and row["usage_unit"] == "DBU"
    assert row["billing_origin_product"] == "JOBS" and row["job_id"] == str(parallel_run.job_id)
    cluster = w.clusters.get(row["cluster_id"])
    hours = (cluster.terminated_time - cluster.start_time) / 3_600_000
    # The cluster's times are whole milliseconds, the usage's exact: allow 1 ms at each end (a run of
    # 0.4 s differs by 0.2 % from that alone).
    rate = (1 + 1) * 0.75
    assert float(row["usage_quantity"]) == pytest.approx(rate * hours, abs=rate * 2 / 3_600_000)
    assert float(row["usage_quantity"]) > 0

    today = datetime.now(UTC).date()
    cost = billing_usage(w, today - timedelta(days=1), today + timedelta(days=1))
    mine = cost[cost["job_run_id"] == str(parallel_run.run_id)].iloc[0]
    assert float(mine["list_price"]) == 0.15 and mine["currency_code"] == "USD"
    assert float(mine["list_cost"]) == pytest.approx(float(mine["dbus"]) * 0.15, rel=1e-6)

    timeline = run_sql(
        w, "SELECT job_id, result_state, compute_ids FROM system.lakeflow.job_run_timeline WHERE run_id = :r",
        {"r": str(parallel_run.run_id)},
    )
    assert timeline.iloc[0]["result_state"] == "SUCCEEDED" and timeline.iloc[0]["compute_ids"] == [row["cluster_id"]]
    clusters = run_sql(w, "SELECT worker_count, worker_node_type FROM system.compute.clusters WHERE cluster_id = :c", {"c": row["cluster_id"]})
    assert clusters.iloc[0]["worker_count"] == 1 and clusters.iloc[0]["worker_node_type"] == "Standard_DS3_v2"
    prices = run_sql(w, "SELECT pricing.default AS p FROM system.billing.list_prices WHERE sku_name = 'SQL' AND cloud = 'AWS'")
    assert float(prices.iloc[0]["p"]) == 0.22


def test_system_table_names_inside_strings_are_left_alone():
    from retail_lakehouse.local._system_tables import mentions, rewrite

    text = "SELECT 'system.billing.usage' AS s, * FROM `system`.billing.usage"
    out = rewrite(text, env="local")
    assert out.startswith("SELECT 'system.billing.usage' AS s, * FROM retail_datalake.local_monitoring.system_billing_usage")
    assert not mentions("SELECT 'system.billing.usage'") and mentions("select * from SYSTEM.COMPUTE.CLUSTERS")


# ----------------------------------------------------------------------------- layering


ENGINE_MODULES = {
    "pipeline/ingest.py", "pipeline/silver.py", "pipeline/gold.py", "pipeline/quality.py", "core/tables.py",
}


def test_only_engine_modules_import_sail_or_delta_rs():
    offenders = []
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB)
        if str(rel) in ENGINE_MODULES or rel.parts[0] == "engine":
            continue
        if rel.parts[:2] == ("sandbox", "drills"):  # drills break the local storage on purpose; never remotely
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in ("pysail", "deltalake")]
    assert not offenders, offenders


def test_run_sql_tells_a_missing_table_from_other_errors(w):
    """A missing table is a TableNotFoundError (and still a SqlError), so callers need not match
    error text; Databricks says TABLE_OR_VIEW_NOT_FOUND, and so does the local workspace."""
    from retail_lakehouse.core.errors import SqlError, TableNotFoundError
    from retail_lakehouse.databricks.statements import run_sql

    with pytest.raises(TableNotFoundError) as caught:
        run_sql(w, "SELECT * FROM retail_datalake.local_gold.no_such_table")
    assert isinstance(caught.value, SqlError)
    assert caught.value.table.endswith("no_such_table")
    with pytest.raises(SqlError) as other:
        run_sql(w, "SELECT no_such_function(1)")
    assert not isinstance(other.value, TableNotFoundError)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_runs_of_the_workspace_leave_no_event_loops_open(w):
    """A failed run shuts its unused warm kernels down in the run's own thread; that thread's event loop
    (jupyter_client's) is closed as it ends, so a workspace running jobs for days keeps its descriptors."""
    from tests.conftest import epoll_descriptors, gc_paused

    tasks = [
        Task(task_key="boom", max_retries=0,
             notebook_task=NotebookTask(notebook_path=str(NOTEBOOKS / "always_fail.ipynb"),
                                        base_parameters={"message": "kaput"})),
        *[Task(task_key=f"after_{i}", depends_on=[TaskDependency(task_key="boom")],
               notebook_task=NotebookTask(notebook_path=str(NOTEBOOKS / "noop.ipynb"))) for i in range(2)],
    ]
    job_id = w.jobs.create(name="fails_first", tasks=tasks).job_id

    def run_once() -> str:
        return w.jobs.run_now(job_id).result(timeout=timedelta(minutes=3)).state.result_state.value

    with gc_paused():
        states = [run_once()]
        after_one = epoll_descriptors()
        states += [run_once(), run_once()]
        after_three = epoll_descriptors()
    assert states == ["FAILED"] * 3
    assert after_three <= after_one, f"event loops left open: {after_one} -> {after_three} epoll descriptors"
