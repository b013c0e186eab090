"""The daily jobs end to end on generated data: success, idempotency, incremental = full, incidents.

Runs `retail_daily` (ingestion -> transformation -> quality) from databricks.yml with the local
runner, as `lakehouse run` does.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retail_lakehouse import engine
from retail_lakehouse.jobs.runner import run_job
from tests.conftest import generate_sources

DATA_TABLES = [
    "silver.customers", "silver.products", "silver.stores", "silver.orders", "silver.order_items",
    "silver.pos_transactions", "gold.dim_customer", "gold.dim_product", "gold.dim_store", "gold.dim_date",
    "gold.fact_sales", "gold.agg_daily_sales", "bronze.orders", "bronze.order_items",
]
VOLATILE = {"_run_id", "_processed_at", "_ingested_at"}


def snapshot(table: str, drop: set[str] = VOLATILE) -> list[tuple]:
    df = engine.sql(f"SELECT * FROM retail_datalake.local_{table}")
    cols = [c for c in df.columns if c not in drop]
    return sorted((tuple(r) for r in df.select(*cols).collect()), key=repr)


def gold_state() -> dict[str, list[tuple]]:
    """Gold contents comparable between an incremental and a full load.

    customer_sk is left out of the facts: customer versions differ by design (the OLTP source keeps
    only a customer's latest state, so a full load sees one version where daily loads saw each change).
    """
    return {
        "fact": snapshot("gold.fact_sales", VOLATILE | {"customer_sk"}),
        "agg": snapshot("gold.agg_daily_sales"),
        "product": snapshot("gold.dim_product"),
        "store": snapshot("gold.dim_store"),
        "current_customers": sorted(
            tuple(r)
            for r in engine.sql(
                "SELECT customer_id, address, city, state, postal_code, segment "
                "FROM retail_datalake.local_gold.dim_customer WHERE is_current"
            ).collect()
        ),
    }


def daily() -> object:
    run = run_job("retail_daily", env="local")
    return run


@pytest.fixture(scope="module")
def first_run(isolated_home):
    generate_sources(isolated_home, days=3, scale_factor=0.05)
    run = daily()
    return run


def test_daily_job_succeeds_on_generated_data(first_run):
    assert first_run.state == "SUCCESS", first_run.to_dict()
    failed = engine.sql(
        "SELECT check_name, details FROM retail_datalake.local_monitoring.quality_metrics WHERE check_status = 'FAILED'"
    ).collect()
    assert failed == []
    counts = {t: engine.sql(f"SELECT count(*) FROM retail_datalake.local_{t}").collect()[0][0] for t in DATA_TABLES}
    assert all(n > 0 for n in counts.values()), counts
    assert engine.sql("SELECT count(*) FROM retail_datalake.local_silver.orders_quarantine").collect()[0][0] > 0
    jobs = engine.sql(
        "SELECT DISTINCT job_name FROM retail_datalake.local_monitoring.job_runs WHERE task_key IS NULL"
    ).collect()
    assert {r[0] for r in jobs} >= {"retail_daily", "retail_ingestion", "retail_transformation"}


def test_running_again_on_the_same_input_changes_no_table(first_run):
    before = {t: snapshot(t) for t in DATA_TABLES}
    run = daily()
    assert run.state == "SUCCESS"
    assert {t: snapshot(t) for t in DATA_TABLES} == before


def test_scd2_has_one_current_row_and_no_overlaps(first_run):
    bad = engine.sql(
        """SELECT count(*) FROM (
             SELECT customer_id FROM retail_datalake.local_gold.dim_customer
             GROUP BY customer_id HAVING sum(CASE WHEN is_current THEN 1 ELSE 0 END) <> 1)"""
    ).collect()[0][0]
    overlaps = engine.sql(
        """SELECT count(*) FROM retail_datalake.local_gold.dim_customer a
           JOIN retail_datalake.local_gold.dim_customer b
             ON a.customer_id = b.customer_id AND a.customer_sk <> b.customer_sk
            AND a.effective_from < coalesce(b.effective_to, timestamp'9999-12-31')
            AND b.effective_from < coalesce(a.effective_to, timestamp'9999-12-31')"""
    ).collect()[0][0]
    assert bad == 0 and overlaps == 0


def test_incremental_days_equal_one_full_load(first_run, isolated_home, tmp_path_factory, monkeypatch):
    generate_sources(isolated_home, days=4, scale_factor=0.05)
    assert daily().state == "SUCCESS"
    incremental = gold_state()
    # One full load of the same 4 days in a fresh lakehouse.
    full_home = tmp_path_factory.mktemp("full")
    engine.stop_local_server()
    monkeypatch.setenv("LAKEHOUSE_HOME", str(full_home))
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    generate_sources(full_home, days=4, scale_factor=0.05)
    assert daily().state == "SUCCESS"
    full = gold_state()
    engine.stop_local_server()
    monkeypatch.setenv("LAKEHOUSE_HOME", str(isolated_home))
    for key in incremental:
        assert incremental[key] == full[key], key


def test_a_burst_of_bad_rows_fails_the_quality_job(first_run, isolated_home):
    db = isolated_home / "sources" / "store_oltp.sqlite"
    with sqlite3.connect(db) as conn:
        (last,) = conn.execute("SELECT max(updated_at) FROM order_items").fetchone()
        conn.execute(
            "UPDATE order_items SET quantity = -abs(quantity), updated_at = datetime(?, '+1 hour') "
            "WHERE order_item_id % 3 = 0",
            (last,),
        )
    run = daily()
    assert run.state == "FAILED"
    quality = run.task("quality")
    assert quality.state == "FAILED"
    failed = engine.sql(
        "SELECT table_name, check_name FROM retail_datalake.local_monitoring.quality_metrics "
        "WHERE check_status = 'FAILED'"
    ).collect()
    assert ("retail_datalake.local_silver.order_items", "quarantine_rate") in {tuple(r) for r in failed}
    quarantined = engine.sql(
        "SELECT count(*) FROM retail_datalake.local_silver.order_items_quarantine "
        "WHERE _failed_rules LIKE '%quantity_positive%'"
    ).collect()[0][0]
    assert quarantined > 0


def _lakehouse(home, *args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env["LAKEHOUSE_HOME"] = str(home)
    exe = Path(sys.executable).with_name("lakehouse")
    return subprocess.Popen([str(exe), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _state_of(home, monkeypatch) -> dict:
    """Silver and gold rows and the watermarks of a home (volatile columns and Delta versions left out)."""
    engine.stop_local_server()
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    state = {t: snapshot(t) for t in DATA_TABLES if not t.startswith("bronze.")}
    # Every step's watermark; the values of bronze's are the sources' business time (the others are
    # processing times of this home's runs).
    state["watermarks"] = sorted(
        (r[0], r[1], r[2] if r[0] == "bronze" else "")
        for r in engine.sql(
            "SELECT pipeline, source, last_processed_timestamp FROM retail_datalake.local_monitoring.watermarks"
        ).collect()
    )
    engine.stop_local_server()
    return state


def test_a_runner_killed_mid_run_then_run_again_converges(first_run, isolated_home, tmp_path_factory, monkeypatch):
    """`lakehouse run retail_daily` killed (SIGKILL, no clean-up) once tasks have journaled monitoring rows
    that no flush wrote yet; the next run replays them and ends where an uninterrupted run ends."""
    killed, whole = tmp_path_factory.mktemp("killed"), tmp_path_factory.mktemp("whole")
    for home in (killed, whole):
        monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
        generate_sources(home, days=3, scale_factor=0.05)
    monkeypatch.setenv("LAKEHOUSE_HOME", str(isolated_home))
    run = _lakehouse(killed, "run", "retail_daily", start_new_session=True)
    deadline = time.monotonic() + 180
    while len(list((killed / "monitoring_journal").glob("*/*.entry.json"))) < 2:
        assert run.poll() is None, f"the run ended before it could be killed:\n{run.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, "no task journaled monitoring rows within 180 s"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    left = list((killed / "monitoring_journal").glob("*/*.entry.json"))
    assert left, "the kill should leave journaled rows behind"
    again = _lakehouse(killed, "run", "retail_daily")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert not list((killed / "monitoring_journal").glob("*/*.entry.json")), "replayed and removed"
    uninterrupted = _lakehouse(whole, "run", "retail_daily")
    out, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, out[-3000:]

    got, want = _state_of(killed, monkeypatch), _state_of(whole, monkeypatch)

    monkeypatch.setenv("LAKEHOUSE_HOME", str(isolated_home))
    for key in want:
        assert got[key] == want[key], key
