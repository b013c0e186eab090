"""The callers of `retail_lakehouse.alerts`: the job runner, the quality job and the ops procedures
send to the local receivers (real HTTP + SMTP on 127.0.0.1, default params/local.yaml routes), record
`monitoring.alerts` rows, and resolve when the failure clears."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retail_lakehouse import alerts
from retail_lakehouse.alerts import store
from retail_lakehouse.sandbox.alert_receivers import Receivers, read_received

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUNDLE = FIXTURES / "databricks_test.yml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def receivers(isolated_home):
    """The local receivers on free ports (receivers.json tells `alerts.send` where they are)."""
    with Receivers(0, 0, directory=isolated_home / "received") as r:
        yield r
        alerts.flush(60)


def arrived(r: Receivers, kind: str, key: str) -> list[dict]:
    return [rec for rec in read_received(kind, r.directory) if key in json.dumps(rec)]


def runnable(command: str) -> str:
    """The alert's papermill command names an ops notebook and only parameters it declares."""
    import shlex

    import papermill

    words = shlex.split(command)
    assert words[:2] == ["papermill", words[1]] and words[1].startswith("ops_notebooks/"), command
    declared = papermill.inspect_notebook(str(ROOT / words[1]))
    given = [words[i + 1] for i, w in enumerate(words) if w == "-p"]
    assert given and set(given) <= set(declared), (given, sorted(declared))
    return command


def rows(key: str) -> list[dict]:
    return [r for r in store.recent("local", 1000) if r["alert_key"] == key]


# ----------------------------------------------------------------------------- jobs


def test_a_failed_job_alerts_with_its_triage_command_and_a_success_resolves(receivers):
    from retail_lakehouse.databricks.bundle import load_bundle
    from retail_lakehouse.jobs.runner import run_job

    bundle = load_bundle(BUNDLE, target="local")
    run = run_job("fail_job", bundle=bundle, retry_backoff_seconds=0.05)
    assert run.state == "FAILED"
    (hook,) = arrived(receivers, "webhook", "job:fail_job")
    body = hook["body"]
    assert body["event"] == "trigger" and body["severity"] == "error" and body["source"] == "job"
    assert "task boom (" in body["summary"] and "retries exhausted" in body["summary"], body["summary"]
    assert "always fails: kaput" in body["summary"]
    assert body["runbook"] == "book/failure_handling.md#job-failures"
    assert runnable(body["command"]).startswith("papermill ops_notebooks/job_failure_triage.ipynb")
    assert "-p job 'Fail job'" in body["command"] or "-p job fail_job" in body["command"], body["command"]
    assert body["link"] == run.output_dir
    assert arrived(receivers, "slack", "job:fail_job") and arrived(receivers, "email", "job:fail_job")
    (row,) = rows("job:fail_job")
    assert row["delivery_status"] == "DELIVERED" and row["resolved_at"] is None

    # the same job failing again within the window: counted, not sent again
    run_job("fail_job", bundle=bundle, retry_backoff_seconds=0.05)
    assert len(arrived(receivers, "webhook", "job:fail_job")) == 1
    assert rows("job:fail_job")[0]["suppressed_count"] == 1


def test_a_successful_run_resolves_an_open_job_alert_and_costs_nothing_otherwise(receivers):
    from retail_lakehouse.databricks.bundle import load_bundle
    from retail_lakehouse.jobs.job_alerts import notify_run
    from retail_lakehouse.jobs.runner import run_job

    bundle = load_bundle(BUNDLE, target="local")
    sent = alerts.send(alerts.Alert(key="job:parallel_job", severity="error", source="job", summary="x failed"),
                       env="local", wait=30)  # fmt: skip
    assert sent.action == "sent"
    run = run_job("parallel_job", bundle=bundle)
    assert run.state == "SUCCESS"
    assert [r["resolved_at"] is not None for r in rows("job:parallel_job")] == [True]
    resolved = [h["body"] for h in arrived(receivers, "webhook", "job:parallel_job")]
    assert [b["event"] for b in resolved] == ["trigger", "resolve"]

    # nothing open: the success path lists marker files only (no query, no delivery)
    assert "job:parallel_job" not in (alerts.open_keys("job:", env="local") or {"?"})
    started = time.perf_counter()
    for _ in range(20):
        assert notify_run(run) is None
    per_run = (time.perf_counter() - started) / 20
    assert per_run < 0.05, f"{per_run * 1000:.1f} ms per successful run"


def test_a_chained_run_resolves_the_jobs_it_ran(receivers):
    from retail_lakehouse.databricks.bundle import load_bundle
    from retail_lakehouse.jobs.runner import run_job

    for key in ("job:chain_job", "job:params_job"):
        alerts.send(
            alerts.Alert(key=key, severity="error", source="job", summary=f"{key} failed"),
            env="local",
            wait=30,
        )
    run = run_job("chain_job", bundle=load_bundle(BUNDLE, target="local"))
    assert run.state == "SUCCESS", run.to_dict()
    assert alerts.open_keys("job:", env="local") & {"job:chain_job", "job:params_job"} == set()
    assert all(r["resolved_at"] is not None for k in ("job:chain_job", "job:params_job") for r in rows(k))


def test_alerting_never_fails_or_blocks_a_job(receivers, tmp_path, monkeypatch):
    """A malformed alerts config: the run is returned as it was, the row says why, quickly."""
    import yaml

    from retail_lakehouse.jobs.job_alerts import notify_run
    from retail_lakehouse.jobs.job_runs import JobRun

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params" / "local.yaml").read_text())
    raw["alerts"]["destinations"]["slack"] = {"type": "slack", "url": "https://hooks.slack.com/in-the-repo"}
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LAKEHOUSE_PARAMS_DIR", str(tmp_path))
    run = JobRun(run_id="20260101T000000-dead00", job="quiet_job", job_name="Quiet job", state="FAILED",
                 start=datetime.now(UTC), end=datetime.now(UTC), env="local", parameters={})  # fmt: skip
    started = time.monotonic()
    outcome = notify_run(run, wait=10)
    assert time.monotonic() - started < 10
    assert outcome is not None and outcome.action == "sent" and outcome.status == "FAILED", outcome
    assert any("alerts config" in p for p in outcome.problems)
    (row,) = rows("job:quiet_job")
    assert row["delivery_status"] == "FAILED" and "config" in json.loads(row["delivery"])


# ----------------------------------------------------------------------------- quality


def test_a_missing_referenced_table_is_an_error_that_alerts_and_passing_again_resolves(receivers):
    from retail_lakehouse import engine
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.engine import writes
    from retail_lakehouse.pipeline.quality import run_checks
    from retail_lakehouse.pipeline.quality_alerts import notify_quality
    from retail_lakehouse.pipeline.quality_model import CheckSpec

    spark = engine.get_spark("local")
    orders = registry().get("silver.orders")
    writes.write_table(spark.createDataFrame([], orders.ddl()), orders, mode="overwrite", env="local")
    ri = CheckSpec("silver.orders", "customer_exists", "referential_integrity",
                   {"column": "customer_id", "references": "silver.customers.customer_id"}, "error")  # fmt: skip
    report = run_checks(["silver.orders"], run_id="wiring-1", rule_sets={"silver.orders": [ri]}, env="local")
    (result,) = report.results
    assert result.check_status == "ERROR", result
    assert "retail_datalake.local_silver.customers" in result.details and "does not exist" in result.details
    assert "retail_transformation" in result.details
    assert json.loads(result.evidence)["referenced_table"] == "retail_datalake.local_silver.customers"

    outcomes = notify_quality(report, env="local")
    assert {k: o.action for k, o in outcomes.items()} == {"quality:silver.orders": "sent"}
    (hook,) = arrived(receivers, "webhook", "quality:silver.orders")
    body = hook["body"]
    assert (
        body["source"] == "quality" and "1 ERROR" in body["summary"] and "customer_exists" in body["summary"]
    )
    assert body["runbook"] == "book/failure_handling.md#quality-failures"
    assert runnable(body["command"]).startswith("papermill ops_notebooks/quality_failure_triage.ipynb")
    assert "-p table silver.orders" in body["command"] and "-p env local" in body["command"]

    customers = registry().get("silver.customers")
    writes.write_table(spark.createDataFrame([], customers.ddl()), customers, mode="overwrite", env="local")
    report = run_checks(["silver.orders"], run_id="wiring-2", rule_sets={"silver.orders": [ri]}, env="local")
    assert [r.check_status for r in report.results] == ["PASSED"]
    outcomes = notify_quality(report, env="local")
    assert {k: o.action for k, o in outcomes.items()} == {"quality:silver.orders": "resolved"}
    assert [h["body"]["event"] for h in arrived(receivers, "webhook", "quality:silver.orders")] == [
        "trigger",
        "resolve",
    ]
    # passing again with nothing open: no alert call at all
    assert notify_quality(report, env="local") == {}


# ----------------------------------------------------------------------------- ops monitors


def test_stale_tables_alert_once_each_and_fresh_tables_resolve(receivers):
    import pandas as pd

    from retail_lakehouse.ops import incident_alerts

    def report(**status: str) -> pd.DataFrame:
        return pd.DataFrame([{"table": t.replace("__", "."), "full_name": f"retail_datalake.local_{t}",
                              "status": s, "reason": "last written 50.0 h ago (SLA 26 h)" if s != "FRESH" else "ok"}
                             for t, s in status.items()])  # fmt: skip

    out = incident_alerts.freshness(report(gold__fact_sales="STALE", gold__dim_store="FRESH"), env="local")
    assert {k: o.action for k, o in out.items()} == {"freshness:gold.fact_sales": "sent"}
    (hook,) = arrived(receivers, "webhook", "freshness:gold.fact_sales")
    body = hook["body"]
    assert (
        body["severity"] == "warning"
        and "gold.fact_sales is STALE: last written 50.0 h ago" in body["summary"]
    )
    assert body["runbook"] == "book/monitoring.md#freshness"
    assert runnable(body["command"]) == (
        "papermill ops_notebooks/data_freshness.ipynb runs/data_freshness.ipynb -p env local -p fail_on_stale True"
    )
    again = incident_alerts.freshness(report(gold__fact_sales="STALE"), env="local")
    assert again["freshness:gold.fact_sales"].action == "suppressed"
    fresh = incident_alerts.freshness(report(gold__fact_sales="FRESH", gold__dim_store="FRESH"), env="local")
    assert {k: o.action for k, o in fresh.items()} == {"freshness:gold.fact_sales": "resolved"}


def test_a_lagging_stream_alerts_and_a_stream_keeping_up_resolves(receivers):
    import pandas as pd

    from retail_lakehouse.ops import incident_alerts
    from retail_lakehouse.ops.diagnose_streaming_lag import LagDiagnosis

    def diagnosis(lagging: bool) -> LagDiagnosis:
        cause = "backlog_growing" if lagging else "none"
        return LagDiagnosis("pos_events", pd.DataFrame(), {"lagging": lagging}, {}, cause, pd.DataFrame(),
                            "Stream 'pos_events' is lagging: the backlog reached 40 files")  # fmt: skip

    out = incident_alerts.stream_lag(diagnosis(True), env="local")
    assert out["stream_lag:pos_events"].action == "sent"
    (hook,) = arrived(receivers, "webhook", "stream_lag:pos_events")
    assert "backlog reached 40 files" in hook["body"]["summary"]
    assert "-p stream pos_events" in runnable(hook["body"]["command"])
    assert hook["body"]["runbook"] == "book/troubleshooting.md#streaming-lag"
    out = incident_alerts.stream_lag(diagnosis(False), env="local")
    assert out["stream_lag:pos_events"].action == "resolved"


def test_spend_over_the_env_budget_alerts_by_email_and_within_budget_does_not(receivers):
    import datetime as dt

    import pandas as pd

    from retail_lakehouse.ops import incident_alerts
    from retail_lakehouse.ops.cost_review import CostReview

    empty = pd.DataFrame()
    start, end = dt.date(2026, 11, 1), dt.date(2026, 11, 7)

    def review(cost: float) -> CostReview:
        records = pd.DataFrame({"list_cost": [cost], "dbus": [1.0]})
        by_job = pd.DataFrame({"job_name": ["retail_daily"], "list_cost": [cost]})
        return CostReview(start, end, records, by_job, empty, empty, empty, empty, empty, empty, empty, "")

    assert incident_alerts.cost(review(3.0), env="local") == {}  # weekly_usd 25 in params/local.yaml
    out = incident_alerts.cost(review(40.0), env="local")
    assert out["cost:2026-11-01..2026-11-07"].action == "sent"
    (mail,) = arrived(receivers, "email", "cost:2026-11-01..2026-11-07")
    assert "over the local budget $25.00 (weekly_usd 25) by $15.00" in json.dumps(mail)
    assert "top spender retail_daily" in json.dumps(mail)
    (hook,) = arrived(receivers, "webhook", "cost:2026-11-01..2026-11-07")
    assert "-p start_date 2026-11-01 -p end_date 2026-11-07" in runnable(hook["body"]["command"])


def test_a_batch_of_incidents_is_one_row_each_then_counted_then_resolved(receivers):
    keys = [f"freshness:batch.t{i:02d}" for i in range(12)]
    firing = [
        alerts.Alert(key=k, severity="warning", source="freshness", summary=f"{k} is STALE") for k in keys
    ]
    started = time.monotonic()
    sent = alerts.update(firing, prefix="freshness:batch.", env="local", wait=60)
    assert time.monotonic() - started < 15
    assert {k: (o.action, o.status) for k, o in sent.items()} == dict.fromkeys(keys, ("sent", "DELIVERED"))
    assert (
        sorted(
            r["body"]["key"]
            for r in read_received("webhook", receivers.directory)
            if "batch.t" in r["body"]["key"]
        )
        == keys
    )
    again = alerts.update(firing, prefix="freshness:batch.", env="local", wait=60)
    assert {o.action for o in again.values()} == {"suppressed"}
    done = alerts.update([], keys, prefix="freshness:batch.", env="local", wait=60)
    assert {o.action for o in done.values()} == {"resolved"}
    recorded = [r for r in store.recent("local", 1000) if r["alert_key"] in keys]
    assert len(recorded) == 12 and all(r["suppressed_count"] == 1 and r["resolved_at"] for r in recorded)
    assert alerts.open_keys("freshness:batch.", env="local") == set()
