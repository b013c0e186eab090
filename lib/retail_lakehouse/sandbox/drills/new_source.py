"""Drill: the store OLTP has a new table, `returns`, that the lakehouse does not ingest yet."""

from __future__ import annotations

import shutil
import sqlite3

from retail_lakehouse.sandbox.drills import DrillResult, register

NAME = "returns"
SCALE = 0.2
# More defective returns than the default (0.04), so the example run quarantines and deduplicates
# some: 2 NULL return_ids of 65 rows (3%, under the 5% quarantine-rate check), 5 re-sent copies.
RETURN_DEFECTS = 0.12


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
    from retail_lakehouse.onboarding.project_copy import ProjectCopy
    from retail_lakehouse.sandbox.generate import DefectRates, generate

    settings = load_settings("local")
    root = settings.home / "drills" / "new_source"
    shutil.rmtree(root, ignore_errors=True)
    rates = DefectRates.load(return_defects=RETURN_DEFECTS)
    days = rates.returns_day + 3
    copy = ProjectCopy.create(root)
    # The copy's params are this checkout's: its sources sit at the same places under its own home.
    oltp = copy.home / settings.sqlite_path().relative_to(settings.home)
    landing = copy.home / settings.local_path("landing").relative_to(settings.home)
    result = generate(copy.home, scale_factor=SCALE, days=days, defects=rates, oltp_path=oltp, landing_dir=landing)
    with sqlite3.connect(oltp) as conn:
        source_rows = conn.execute(f"SELECT count(*) FROM {NAME}").fetchone()[0]
    defects = {k.split(".", 1)[1]: v for k, v in result.defects.items() if k.startswith(f"{NAME}.")}
    return DrillResult(
        name="new_source",
        notebook="onboard_source",
        description=f"the store OLTP went live with a `{NAME}` table on day {rates.returns_day + 1} of {days} "
        f"({source_rows} rows; defects {defects}); no registry entry, notebook or job task reads it. Onboard "
        "it and prove it end to end in a copy of the project.",
        parameters={"env": "local", "name": NAME, "jdbc_table": NAME, "project_dir": str(root), "dry_run": False},
        facts={"table": NAME, "days": days, "project_dir": str(root), "source_rows": source_rows, "defects": defects},
    )
