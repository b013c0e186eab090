"""Drill: a burst of bad orders (no customer) arrives from the store database and is quarantined."""

from __future__ import annotations

import datetime as dt
import sqlite3

from retail_lakehouse.sandbox.drills import DrillResult, register

BURST = 40


@register("quality_burst", notebook="quality_failure_triage", summary="a burst of orders without customer_id -> quarantine, failed checks")
def quality_burst() -> DrillResult:
    """Insert orders with a NULL customer_id into the source, then ingest, clean and check orders."""
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.jobs import runner
    from retail_lakehouse.pipeline import ingest, quality, silver

    path = load_settings("local").sqlite_path()
    assert path is not None
    with sqlite3.connect(path) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(orders)")]
        high = db.execute("SELECT MAX(updated_at), MAX(order_id) FROM orders").fetchone()
        updated = (dt.datetime.fromisoformat(high[0]) + dt.timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
        template = db.execute(f"SELECT {', '.join(columns)} FROM orders WHERE customer_id IS NOT NULL LIMIT 1").fetchone()
        row = dict(zip(columns, template, strict=True))
        first_id = int(high[1]) + 1
        rows = []
        for i in range(BURST):
            bad = {**row, "order_id": first_id + i, "customer_id": None, "updated_at": updated}
            rows.append(tuple(bad[c] for c in columns))
        db.executemany(f"INSERT INTO orders ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    run_id = runner.new_run_id()
    ingest.ingest_oltp("orders", run_id=run_id, env="local")
    cleaned = silver.clean_table("orders", run_id=run_id, env="local")
    report = quality.run_checks(["orders"], run_id=run_id, env="local")
    failed = sorted(r.check_name for r in report.failed_errors)
    today = dt.datetime.now(dt.UTC).date()
    return DrillResult(
        name="quality_burst",
        notebook="quality_failure_triage",
        description=f"{BURST} orders without customer_id arrived; run {run_id} quarantined "
        f"{cleaned.quarantined_rows} rows and the checks {', '.join(failed) or 'none'} failed.",
        parameters={"env": "local", "table": "silver.orders", "date": today.isoformat()},
        facts={"run_id": run_id, "burst": BURST, "quarantined": cleaned.quarantined_rows, "failed_checks": failed,
               "rule": "customer_id_not_null", "order_ids": [first_id, first_id + BURST - 1]},
    )
