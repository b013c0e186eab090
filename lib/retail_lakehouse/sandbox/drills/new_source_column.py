"""Drill: the OLTP added `orders.promo_code`; the next ingestion brought it into bronze."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3

from retail_lakehouse.core.errors import DrillError
from retail_lakehouse.sandbox.drills import DrillResult, register


@register("new_source_column", notebook="schema_evolution",
          summary="a new source column (orders.promo_code) reached bronze -> carry it into silver")
def new_source_column() -> DrillResult:
    """Generate one more source day on which the OLTP runs its promo_code migration, then ingest it.

    The sources are regenerated with the same seed and scale (read back from the OLTP file), one day
    longer: generation is deterministic, so the earlier days are unchanged and only the new day (whose
    orders carry promo_code) is new. `retail_ingestion` then evolves bronze.orders; silver has not
    seen the new rows yet.
    """
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.jobs.runner import run_job
    from retail_lakehouse.ops import KERNEL_PRELOAD
    from retail_lakehouse.sandbox.generate import DefectRates, generate

    settings = load_settings("local")
    oltp, landing = settings.sqlite_path(), settings.local_path("landing")
    # Only the generator's day folders (YYYY-MM-DD): other drills land files in folders of their own.
    days_dirs = sorted(p.name for p in landing.iterdir() if p.is_dir() and re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.name))
    start, days = dt.date.fromisoformat(days_dirs[0]), len(days_dirs)
    with sqlite3.connect(oltp) as conn:
        products = conn.execute("SELECT count(DISTINCT product_id) FROM products").fetchone()[0]
    scale = products / 2000  # the generator makes round(2000 * scale) products
    default = DefectRates.load()
    # The migration runs on the new day, unless the default schedule already ran it earlier.
    change_day = min(default.schema_change_day, days)
    generate(settings.home, scale_factor=scale, days=days + 1, start_date=start,
             defects=DefectRates.load(schema_change_day=change_day), oltp_path=oltp, landing_dir=landing)
    with sqlite3.connect(oltp) as conn:
        with_code = conn.execute("SELECT count(DISTINCT order_id) FROM orders WHERE promo_code IS NOT NULL").fetchone()[0]
    run = run_job("retail_ingestion", env="local", preload=KERNEL_PRELOAD)
    if run.state != "SUCCESS":
        raise DrillError(f"drill new_source_column: retail_ingestion ended {run.state}")
    arrival = start + dt.timedelta(days=change_day)
    return DrillResult(
        name="new_source_column",
        notebook="schema_evolution",
        description=f"the store OLTP added orders.promo_code on {arrival}; ingestion evolved bronze.orders, "
        f"{with_code} orders carry a code. Carry the column into silver.orders.",
        parameters={"env": "local", "table": "orders", "dry_run": False},
        facts={"column": "promo_code", "arrival_day": arrival.isoformat(), "orders_with_code": with_code,
               "days": days + 1},
    )
