"""job_failure_triage: classifiers on small texts; the failed_job drill triaged and repaired by the notebook;
the triage of a failed Airflow DAG run on a fake API (the real one: `airflow/tests/test_orchestration_triage.py`)."""

from __future__ import annotations

import pytest

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.ops import failure_classifiers as fc
from retail_lakehouse.ops import job_failure_triage as jft
from retail_lakehouse.ops import job_run_triage as jrt
from tests.ops._helpers import ROOT, audit_rows, run_notebook


@pytest.mark.parametrize(
    ("error", "category"),
    [
        ("MemoryError: \n  rows = df.collect()", "out_of_memory"),
        ("java.lang.OutOfMemoryError: Java heap space", "out_of_memory"),
        ("SchemaMismatchError: write to x rejected: the DataFrame has column(s) the table lacks", "schema_mismatch"),
        ("SourceError: source store_oltp is unreachable: no SQLite database at /x", "source_unreachable"),
        ("CheckFailedError: 2 error checks failed: silver.orders.quarantine_rate", "data_quality"),
        ("ZeroDivisionError: division by zero", "other"),
        (None, "other"),
    ],
)
def test_classify(error, category):
    c = fc.classify(error)
    assert c.category == category
    assert c.next_step
    if category != "other":
        assert c.evidence


def test_classifiers_registry_is_ordered_and_pluggable():
    assert list(fc.CLASSIFIERS)[:4] == ["out_of_memory", "schema_mismatch", "source_unreachable", "data_quality"]


@pytest.mark.parametrize(("job", "run_id"), [("", "12; DROP TABLE x"), ("retail'; --", ""), ("", "abc")])
def test_bad_target_is_refused(job, run_id):
    with pytest.raises(ParameterError):
        jrt.target(job, run_id)


def test_target():
    assert jrt.target("retail_ingestion", "") == "retail_ingestion"
    assert jrt.target("", "123") == "123"
    assert jrt.target("x", "manual") == "x"


def test_failed_job_triaged_and_repaired(demo_lakehouse, tmp_path):
    from retail_lakehouse.databricks.workspace import connect
    from retail_lakehouse.sandbox import drills

    result = drills.run("failed_job")
    assert result.facts["state"] == "FAILED" and result.facts["failed_tasks"]
    # Triage as the library sees it.
    t = jrt.triage(connect("local"), str(result.facts["run_id"]))
    assert t.category == "source_unreachable"
    assert set(t.failed_tasks) == set(result.facts["failed_tasks"])
    # Bad parameters stop the notebook before any change.
    with pytest.raises(Exception, match="action"):
        run_notebook("job_failure_triage", tmp_path, **{**result.parameters, "action": "rerun-everything"})
    with pytest.raises(Exception, match="confirm"):
        run_notebook("job_failure_triage", tmp_path, **{**result.parameters, "env": "prod", "dry_run": False})
    # The engineer's run: triage and retry.
    text = run_notebook("job_failure_triage", tmp_path, **{**result.parameters, "dry_run": False})
    assert "DIAGNOSIS (source_unreachable)" in text
    assert "the fix held" in text
    # The verdict, last: the repaired run's outcome and the next command.
    summary = text[text.index("===== SUMMARY of job_failure_triage: HELD ====="):]
    assert "SYMPTOM    Job retail_ingestion run" in summary and "OUTCOME    Repair" in summary
    assert "papermill ops_notebooks/data_freshness.ipynb" in summary
    t = jrt.triage(connect("local"), str(result.facts["run_id"]))
    assert t.result_state == "SUCCESS" and not t.failed
    rows = audit_rows("job_failure_triage")
    assert "SUCCESS" in set(rows["outcome"])


# ----------------------------------------------------------------------------- a failed Airflow DAG run

RUN = "scheduled__2024-01-05T02:00:00+00:00"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dag_id": "retail ingestion; rm", "dag_run_id": RUN}, "dag_id"),
        ({"dag_id": "retail_ingestion", "dag_run_id": ""}, "dag_run_id"),
        ({"dag_id": "", "dag_run_id": RUN}, "dag_id"),
        ({"dag_id": "retail_ingestion", "dag_run_id": "x/../../etc"}, "dag_run_id"),
        ({"dag_id": "retail_ingestion", "dag_run_id": RUN, "job_run_id": "12"}, "dag_id"),
        ({"dag_id": "retail_ingestion", "dag_run_id": RUN, "action": "retry"}, "action"),
    ],
)
def test_bad_dag_target_is_refused(kwargs, name):
    from retail_lakehouse.ops import airflow_triage as at

    with pytest.raises(ParameterError) as info:
        at.dag_target(**kwargs)
    assert info.value.name == name


def test_dag_target():
    from retail_lakehouse.ops import airflow_triage as at

    assert at.dag_target("", "") is None  # Databricks mode
    assert at.dag_target(" retail_ingestion ", RUN) == ("retail_ingestion", RUN)
    assert at.dag_target("retail_ingestion", "manual__2026-11-27T19:25:18.785845+00:00")


def test_log_facts_reads_structured_and_plain_logs():
    from retail_lakehouse.ops.airflow_triage import log_facts

    structured = [
        {"event": "::group::Log message source details", "sources": ["/logs/attempt=2.log"]},
        {"event": "Run submitted with run_id: 1070883769300841", "level": "info"},
        {"event": "Task failed with exception", "level": "error", "error_detail": [
            {"exc_type": "AirflowException", "exc_value": "run_x failed with terminal state: FAILED and with the "
             "errors [{'error': 'SourceError: source store_oltp is unreachable'}]"}]},
    ]
    runs, error = log_facts(structured)
    assert runs == [1070883769300841]
    assert error.startswith("AirflowException: run_x failed") and "SourceError" in error
    plain = ["[info] Run submitted with run_id: 7", "airflow.exceptions.AirflowException: boom"]
    assert log_facts(plain) == ([7], "AirflowException: boom")
    assert log_facts(None) == ([], None)


def test_airflow_api_comes_from_the_environment_and_never_holds_a_secret_in_params(monkeypatch, tmp_path):
    from retail_lakehouse.core.errors import ConfigError
    from retail_lakehouse.ops.airflow_triage import AirflowApi

    for var in ("AIRFLOW_API_URL", "AIRFLOW_API_USERNAME", "AIRFLOW_API_PASSWORD", "AIRFLOW_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="set AIRFLOW_API_URL"):
        AirflowApi.for_env("local")
    monkeypatch.setenv("AIRFLOW_API_URL", "http://airflow.internal:8080")
    monkeypatch.setenv("AIRFLOW_API_USERNAME", "ops")
    monkeypatch.setenv("AIRFLOW_API_PASSWORD", "s3cret")
    api = AirflowApi.for_env("prod")
    assert (api.base_url, api.username, api.password) == ("http://airflow.internal:8080", "ops", "s3cret")
    assert "s3cret" not in repr(api)
    monkeypatch.setenv("AIRFLOW_API_URL", "file:///etc/passwd")
    with pytest.raises(ConfigError, match="http"):
        AirflowApi.for_env("local")
    # params/<env>.yaml may name the api-server and the user, never a password
    monkeypatch.delenv("AIRFLOW_API_URL")
    monkeypatch.delenv("AIRFLOW_API_USERNAME")
    base = (ROOT / "params" / "local.yaml").read_text()
    (tmp_path / "local.yaml").write_text(base + "airflow:\n  api_url: http://127.0.0.1:8080\n  username: viewer\n")
    monkeypatch.setenv("LAKEHOUSE_PARAMS_DIR", str(tmp_path))
    api = AirflowApi.for_env("local")
    assert (api.base_url, api.username) == ("http://127.0.0.1:8080", "viewer")
    (tmp_path / "local.yaml").write_text(base + "airflow:\n  api_url: http://127.0.0.1:8080\n  password: oops\n")
    with pytest.raises(ConfigError, match="AIRFLOW_API_PASSWORD"):
        AirflowApi.for_env("local")


def test_unreachable_airflow_says_which_variable_to_set():
    import socket

    from retail_lakehouse.ops.airflow_triage import AirflowApi, AirflowApiError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AirflowApiError, match=r"unreachable .*AIRFLOW_API_URL") as info:
        AirflowApi(f"http://127.0.0.1:{port}", token="t", timeout=5).get("/dags")
    assert info.value.status == 0


class _FakeAirflow:
    """Answers `AirflowApi.get` from a dict of path -> response (404 for anything else)."""

    def __init__(self, routes):
        self.routes, self.calls = routes, []

    def get(self, path, **query):
        from retail_lakehouse.ops.airflow_triage import AirflowApiError

        self.calls.append(path)
        if path not in self.routes:
            raise AirflowApiError(f"GET {path}: HTTP 404", status=404, path=path)
        return self.routes[path]


def _fake_dag_run(*, with_runs=True):
    base = "/dags/retail_ingestion/dagRuns/" + RUN.replace(":", "%3A").replace("+", "%2B")
    ti = base + "/taskInstances/run_retail_ingestion"
    tries = [
        {"try_number": n, "state": "failed", "start_date": f"2024-01-05T02:0{n}:00Z",
         "end_date": f"2024-01-05T02:0{n}:30Z", "duration": 30.0}
        for n in (1, 2)
    ]
    routes = {
        base: {"state": "failed", "run_type": "scheduled", "logical_date": "2024-01-05T02:00:00Z",
               "start_date": "2024-01-05T02:00:00Z", "end_date": "2024-01-05T02:03:00Z"},
        base + "/taskInstances": {"task_instances": [
            {"task_id": "run_retail_ingestion", "state": "failed", "try_number": 2, "max_tries": 1,
             "operator": "DatabricksRunNowOperator", "start_date": "2024-01-05T02:02:00Z",
             "end_date": "2024-01-05T02:02:30Z", "duration": 30.0}]},
        ti + "/tries": {"task_instances": tries},
    }
    error = {"event": "Task failed", "error_detail": [{"exc_type": "AirflowException", "exc_value":
             "errors [{'error': 'SourceError: source store_oltp is unreachable: no SQLite database'}]"}]}
    for n, run in ((1, 11), (2, 22)):
        events = [{"event": f"Run submitted with run_id: {run}"}] if with_runs else []
        routes[f"{ti}/logs/{n}"] = {"content": [*events, error], "continuation_token": None}
    if with_runs:
        routes[ti + "/xcomEntries/run_id"] = {"value": 22}
        routes[ti + "/xcomEntries/run_page_url"] = {"value": "https://adb.example/jobs/1/runs/22"}
    return routes


def test_triage_of_a_dag_run_reads_tries_and_the_databricks_run_of_each(tmp_path):
    from retail_lakehouse.ops import airflow_triage as at

    t = at.triage_dag_run("retail_ingestion", RUN, api=_FakeAirflow(_fake_dag_run()), env="prod",
                          failures_file=tmp_path / "none.jsonl")
    task = t.failed_task
    assert (task.task_id, task.try_number, task.tries_allowed, task.databricks_run_id) == ("run_retail_ingestion", 2, 2, 22)
    assert [r["databricks_run_id"] for r in t.try_rows()] == [11, 22]
    assert "SourceError" in task.error
    frame = t.tries_frame()
    assert list(frame["databricks_run_id"]) == [11, 22] and str(frame["start_date"].dtype).startswith("datetime64")
    assert "try 2 of 2" in t.summary() and "Databricks run 11" in t.summary()
    assert task.diagnosis.endswith("-p job_run_id 22 -p env prod")
    # without a workspace, the cause comes from Airflow's log
    cause = jft.diagnose_dag_run(t, None)
    assert (cause.category, cause.source, cause.databricks_run_id) == ("source_unreachable", "airflow log", 22)
    lines = jft.dag_run_conclusion(t, cause)
    assert lines[0].startswith(f"DIAGNOSIS (source_unreachable): DAG run retail_ingestion/{RUN} failed: task "
                               "run_retail_ingestion failed at try 2 of 2; its Databricks run 22.")
    assert any(x.startswith("NOTE: no workspace") for x in lines)
    assert any("airflow tasks clear retail_ingestion -t '^run_retail_ingestion$'" in x for x in lines)
    assert jft.dag_run_audit(t, cause)["category"] == "source_unreachable"


def test_workspace_that_does_not_answer_falls_back_to_the_log(tmp_path):
    from retail_lakehouse.ops import airflow_triage as at

    class Down:
        @property
        def jobs(self):
            raise ConnectionError("workspace down")

    t = at.triage_dag_run("retail_ingestion", RUN, api=_FakeAirflow(_fake_dag_run()), failures_file=tmp_path / "x")
    cause = jft.diagnose_dag_run(t, Down())
    assert cause.source == "airflow log" and "ConnectionError" in cause.note and cause.category == "source_unreachable"


def test_a_task_that_started_no_databricks_run_is_an_orchestration_failure(tmp_path):
    from retail_lakehouse.ops import airflow_triage as at

    t = at.triage_dag_run("retail_ingestion", RUN, api=_FakeAirflow(_fake_dag_run(with_runs=False)),
                          failures_file=tmp_path / "x")
    assert t.failed_task.databricks_run_id is None
    cause = jft.diagnose_dag_run(t, None)
    assert cause.category == "orchestration" and "databricks_local" in cause.classification.next_step
    assert "no Databricks run (the job never started)" in jft.dag_run_conclusion(t, cause)[0]


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        ({"dag_id": "retail_ingestion"}, "dag_run_id"),
        ({"dag_id": "retail_ingestion", "dag_run_id": RUN}, "AIRFLOW_API_URL"),
    ],
)
def test_notebook_refuses_an_incomplete_airflow_triage_before_touching_anything(parameters, match, tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_API_URL", raising=False)
    with pytest.raises(Exception, match=match):
        run_notebook("job_failure_triage", tmp_path, env="local", **parameters)


def test_notebook_with_airflow_unreachable_fails_clearly_and_is_audited(demo_lakehouse, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AIRFLOW_API_PASSWORD", "never-printed")
    with pytest.raises(Exception, match="unreachable") as info:
        run_notebook("job_failure_triage", tmp_path, env="local", dag_id="retail_ingestion", dag_run_id=RUN)
    assert "AIRFLOW_API_URL" in str(info.value)
    assert "never-printed" not in (tmp_path / "job_failure_triage.out.ipynb").read_text()
    rows = audit_rows("job_failure_triage")
    failed = rows[rows["operation"] == "triage:airflow"]
    assert len(failed) and failed.iloc[-1]["outcome"].startswith("FAILED: AirflowApiError")


# ----------------------------------------------------------------------------- the procedure: request, run, outcome


def test_request_checks_the_parameters_together(monkeypatch):
    from retail_lakehouse.core.errors import ConfigError, ConfirmationRequired

    r = jft.make_request(env="local", job_run_id="12", action="retry", dry_run=True)
    assert (r.job_or_run, r.dag, r.operation, r.changes_nothing) == ("12", None, "triage:retry", True)
    assert not jft.make_request(env="local", action="retry", dry_run=False).changes_nothing
    with pytest.raises(ConfirmationRequired):
        jft.make_request(env="prod", action="retry", dry_run=False)
    with pytest.raises(ParameterError, match="not both"):
        jft.make_request(env="local", dag_id="retail_ingestion", dag_run_id=RUN, job="retail_ingestion")
    monkeypatch.delenv("AIRFLOW_API_URL", raising=False)
    with pytest.raises(ConfigError, match="AIRFLOW_API_URL"):
        jft.make_request(env="local", dag_id="retail_ingestion", dag_run_id=RUN)
    monkeypatch.setenv("AIRFLOW_API_URL", "http://127.0.0.1:8080")
    r = jft.make_request(env="local", dag_id="retail_ingestion", dag_run_id=RUN)
    assert (r.dag, r.operation, r.changes_nothing) == (("retail_ingestion", RUN), "triage:airflow", True)


def test_run_on_a_dag_run_fills_the_audit_row_and_concludes(tmp_path, monkeypatch):
    import datetime as dt

    from retail_lakehouse.ops.audit import AuditRecord

    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))  # no failure record of the DAGs here
    request = jft.TriageRequest("prod", "", ("retail_ingestion", RUN), airflow=_FakeAirflow(_fake_dag_run()))
    record = AuditRecord("a", "job_failure_triage", request.operation, "prod", "me", dt.datetime.now(dt.UTC), {}, True)
    outcome = jft.run(None, request, record=record)  # no workspace: the cause comes from Airflow's log
    assert outcome.triage is None and outcome.cause.category == "source_unreachable"
    assert record.details == jft.dag_run_audit(outcome.dag_run, outcome.cause) and record.outcome == "RUNNING"
    assert outcome.databricks_note.startswith("Databricks run 22 could not be read: no workspace")
    assert outcome.conclusion() == jft.dag_run_conclusion(outcome.dag_run, outcome.cause)
    assert outcome.raise_for_status() is None  # a triage alone never fails the run
    timeline = outcome.dag_run.tries_timeline()
    assert list(timeline["label"]) == ["try 1: Databricks run 11", "try 2: Databricks run 22"]
    summary = jft.summary_of(outcome, env="prod")
    assert summary.status == "DIAGNOSED" and "airflow tasks clear retail_ingestion" in summary.next_step
    assert "action retry" not in summary.diagnosis  # a DAG run is retried in Airflow, not by a repair


def test_conclusion_of_a_databricks_run_without_a_failure():
    request = jft.TriageRequest("local", "", action="retry", dry_run=False)
    t = jrt.Triage(None, None, None, jrt.task_frame({}), diagnosis="No failed run of any job among the recent runs: nothing to triage.")
    outcome = jft.TriageOutcome(request, t)
    assert outcome.conclusion() == [
        "DIAGNOSIS (none): No failed run of any job among the recent runs: nothing to triage.",
        "NEXT STEP: Nothing to do: no failed task.",
        "RETRY: nothing to retry (no failed task).",
    ]
    assert t.trace_tails() == {} and t.timeline().empty and outcome.raise_for_status() is None


def test_same_trace_of_several_tasks_is_shown_once_in_whole_lines():
    import pandas as pd

    trace = "Traceback (most recent call last):\n" + "  frame line\n" * 200 + "SourceError: store_oltp unreachable"
    tasks = pd.DataFrame({"task_key": ["a", "b", "c"], "error_trace": [trace, trace, "other\nValueError: x"]})
    failed = {k: fc.classify("SourceError: store_oltp unreachable") for k in ("a", "b", "c")}
    t = jrt.Triage(7, "retail_ingestion", "FAILED", tasks, failed)
    tails = t.trace_tails(chars=300)
    assert list(tails) == ["a, b", "c"]
    assert tails["a, b"].startswith("  frame line") and tails["a, b"].endswith("unreachable")
    assert len(tails["a, b"]) <= 300
    request = jft.TriageRequest("prod", "7", action="none")
    summary = jft.summary_of(jft.TriageOutcome(request, t), env="prod")
    assert summary.status == "DIAGNOSED" and summary.symptom == "Job retail_ingestion run 7 ended FAILED"
    assert "-p job_run_id 7" in summary.next_step and "-p action retry" in summary.next_step


def test_evidence_is_cut_between_words():
    evidence = fc.classify("SourceError: source store_oltp is " + "unreachable " * 40).evidence
    assert evidence.endswith(" ...") and len(evidence) <= 244
    assert set(evidence.removesuffix(" ...").split()) == {"SourceError:", "source", "store_oltp", "is", "unreachable"}
