"""The DAGs import cleanly and have the structure the runbook promises."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta

import pytest

from conftest import DAGS

EXPECTED = {
    "retail_ingestion": (
        "run_retail_ingestion",
        {"max_files_per_trigger": "50", "backfill_start_date": "", "backfill_end_date": ""},
    ),
    "retail_transformation": ("run_retail_transformation", {"backfill_start_date": "", "backfill_end_date": ""}),
    "retail_data_quality_checks": ("run_retail_data_quality_checks", {"business_date": ""}),
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models.dagbag import DagBag

    return DagBag(str(DAGS), include_examples=False)


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_structure(dagbag, dag_id):
    from airflow.providers.databricks.operators.databricks import DatabricksRunNowOperator

    dag = dagbag.dags[dag_id]
    task_id, params = EXPECTED[dag_id]
    assert [t.task_id for t in dag.tasks] == [task_id]
    task = dag.get_task(task_id)
    assert isinstance(task, DatabricksRunNowOperator)
    assert task.job_name == dag_id  # the Databricks job of databricks.yml, looked up by name at run time
    assert task.job_parameters == {k: "{{ params." + k + " }}" for k in params}
    assert {k: p.value for k, p in dag.params.items()} == params
    assert task.retries == 3
    assert task.retry_exponential_backoff
    assert task.max_retry_delay == timedelta(seconds=30)  # the tests' override; 30 min by default
    assert task.databricks_conn_id == "databricks_{{ var.value.get('lakehouse_env', 'local') }}"
    assert task.on_failure_callback and task.on_retry_callback
    assert task.execution_timeout is not None
    assert dag.max_active_runs == 1 and not dag.catchup


def test_dags_chain_by_assets(dagbag):
    ingestion, transformation, quality = (
        dagbag.dags[d] for d in ("retail_ingestion", "retail_transformation", "retail_data_quality_checks")
    )
    assert ingestion.timetable.summary == "0 2 * * *"
    (bronze,) = ingestion.get_task("run_retail_ingestion").outlets
    (gold,) = transformation.get_task("run_retail_transformation").outlets
    assert bronze.name == "retail_datalake.bronze" and gold.name == "retail_datalake.gold"
    assert [a for _, a in transformation.timetable.asset_condition.iter_assets()] == [bronze]
    assert [a for _, a in quality.timetable.asset_condition.iter_assets()] == [gold]


def test_defaults_are_production_sized(monkeypatch):
    import _retail_common as common

    for name in ("RETAIL_AIRFLOW_RETRY_DELAY_SECONDS", "RETAIL_AIRFLOW_MAX_RETRY_DELAY_SECONDS"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("RETAIL_AIRFLOW_RETRIES", raising=False)
    args = common.default_args()
    assert args["retries"] == 3 and args["retry_exponential_backoff"]
    monkeypatch.setenv("RETAIL_AIRFLOW_RETRIES", "1")  # what the orchestration drill does
    assert common.default_args()["retries"] == 1
    assert args["retry_delay"] == timedelta(minutes=5) and args["max_retry_delay"] == timedelta(minutes=30)
    monkeypatch.setenv("LAKEHOUSE_ENV", "prod")
    assert common.conn_id() == "databricks_{{ var.value.get('lakehouse_env', 'prod') }}"


def test_dag_naming_a_job_missing_from_the_bundle_fails_its_import(tmp_path):
    from airflow.models.dagbag import DagBag

    (tmp_path / "bad_dag.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(DAGS)!r})
            from datetime import datetime, timedelta
            from _retail_common import default_args, run_job_task
            from airflow.sdk import DAG

            with DAG(dag_id="retail_nightly_nope", schedule=None, start_date=datetime(2024, 1, 1),
                     default_args=default_args()):
                run_job_task("retail_nightly_nope", execution_timeout=timedelta(hours=1))
            """
        )
    )
    bag = DagBag(str(tmp_path), include_examples=False)
    assert not bag.dags
    (error,) = bag.import_errors.values()
    assert "MissingJobError" in error
    assert "'retail_nightly_nope' is not declared in" in error and "databricks.yml" in error
    assert "retail_ingestion" in error  # lists the jobs it has


def test_missing_bundle_file_is_a_clear_import_error(monkeypatch, tmp_path):
    import _retail_common as common

    monkeypatch.setenv("LAKEHOUSE_BUNDLE", str(tmp_path / "nope.yml"))
    with pytest.raises(common.MissingJobError, match="nope.yml does not exist"):
        common.job_spec("retail_ingestion")


def test_failure_record_is_one_json_line(monkeypatch, tmp_path):
    import json
    from types import SimpleNamespace

    import _retail_common as common

    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    pulls = {"run_id": 42, "run_page_url": "file:///runs/x"}
    ti = SimpleNamespace(
        dag_id="retail_ingestion", task_id="run_retail_ingestion", run_id="manual__1", try_number=2, max_tries=3,
        xcom_pull=lambda task_ids, key: pulls[key],
    )
    common.record_failure({"ti": ti, "exception": RuntimeError("boom")})
    ti.try_number = 4
    common.record_failure({"ti": ti, "exception": RuntimeError("boom")})
    rows = [json.loads(x) for x in (tmp_path / "airflow" / "failures.jsonl").read_text().splitlines()]
    assert [r["event"] for r in rows] == ["up_for_retry", "failed"]
    assert rows[1]["databricks_run_id"] == 42 and rows[1]["exception"] == "RuntimeError: boom"
    assert rows[1]["env"] == os.environ.get("LAKEHOUSE_ENV", "local")
