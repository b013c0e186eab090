"""Drill: the store OLTP has a new table, `returns`, that the lakehouse does not ingest yet."""

from __future__ import annotations

import shutil
import sqlite3

from retail_lakehouse.sandbox.drills import DrillResult, register

NAME = "returns"


@register("new_source", notebook="onboard_source",
          summary="the OLTP has a new table (returns) nothing ingests -> onboard it, run retail_daily in a copy")
def new_source() -> DrillResult:
    """Make a throwaway copy of the project whose own lakehouse home has sources generated through
    three days past the day `returns` appears (not onboarded: no registry entry, notebook or task).

    The copy lives under `LAKEHOUSE_HOME/drills/new_source` (replaced on each run): onboarding writes
    into the copy and its `retail_daily` runs on the copy's own lakehouse, so neither the checkout
    nor the demo lakehouse changes.
    """
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.ops.onboard_source import prepare_copy
    from retail_lakehouse.sandbox.generate import DefectRates

    root = load_settings("local").home / "drills" / "new_source"
    shutil.rmtree(root, ignore_errors=True)
    days = DefectRates.load().returns_day + 3
    copy = prepare_copy(root, days=days)
    with sqlite3.connect(copy.home / "sources" / "store_oltp.sqlite") as conn:
        source_rows = conn.execute(f"SELECT count(*) FROM {NAME}").fetchone()[0]
    return DrillResult(
        name="new_source",
        notebook="onboard_source",
        description=f"the store OLTP went live with a `{NAME}` table on day {days - 3} of {days}; no registry "
        "entry, notebook or job task reads it. Onboard it and prove it end to end in a copy of the project.",
        parameters={"env": "local", "name": NAME, "jdbc_table": NAME, "project_dir": str(root), "dry_run": False},
        facts={"table": NAME, "days": days, "project_dir": str(root), "source_rows": source_rows},
    )
