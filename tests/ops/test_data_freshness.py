"""data_freshness: judging on small frames; the stale_source drill flagged by the notebook."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from papermill.exceptions import PapermillExecutionError

from retail_lakehouse.ops import data_freshness as fr
from tests.ops._helpers import audit_rows, run_notebook

SLAS = (fr.Sla("silver.orders", 26, "order_date", 1), fr.Sla("silver.customers", 26))
NOW = dt.datetime(2024, 1, 10, 12, tzinfo=dt.UTC)


def frame(commit_orders, day, commit_customers):
    return pd.DataFrame({
        "table": ["silver.orders", "silver.customers"], "full_name": ["o", "c"],
        "last_commit": [pd.Timestamp(commit_orders, tz="UTC"), pd.Timestamp(commit_customers, tz="UTC")
                        if commit_customers else pd.NaT],
        "business_date": [day, None]})


def test_fresh_tables():
    report = fr.judge(frame("2024-01-10 02:00", dt.date(2024, 1, 9), "2024-01-10 02:00"), now=NOW,
                      as_of=dt.date(2024, 1, 9), sla_list=SLAS)
    assert list(report["status"]) == ["FRESH", "FRESH"]


def test_old_commit_and_lagging_business_date_and_missing():
    report = fr.judge(frame("2024-01-08 02:00", dt.date(2024, 1, 5), None), now=NOW,
                      as_of=dt.date(2024, 1, 9), sla_list=SLAS)
    orders = report.iloc[0]
    assert orders["status"] == "STALE" and "h ago" in orders["reason"] and "4 days behind" in orders["reason"]
    assert report.iloc[1]["status"] == "MISSING"


def test_declared_slas_name_registered_tables():
    assert len(fr.slas()) >= 10


def test_stale_source_flagged(demo_lakehouse, tmp_path):
    from retail_lakehouse.databricks.workspace import connect
    from retail_lakehouse.ops._delta import sql
    from retail_lakehouse.sandbox import drills

    text = run_notebook("data_freshness", tmp_path, env="local")
    assert "FRESH: all" in text  # the pipeline just ran: healthy before the incident
    result = drills.run("stale_source")
    text = run_notebook("data_freshness", tmp_path, **result.parameters)
    for table in result.facts["stale"]:
        assert f"{table}: STALE" in text
    assert "silver.orders: STALE" not in text
    # a scheduled check fails the run: the outcome raises, with the stale tables in its message
    with pytest.raises(PapermillExecutionError) as info:
        run_notebook("data_freshness", tmp_path, **result.parameters, fail_on_stale=True)
    assert info.value.ename == "ProcedureFailedError"
    assert info.value.evalue.startswith("stale tables: [")
    assert all(f"'{table}'" in info.value.evalue for table in result.facts["stale"])
    assert len(audit_rows("data_freshness")) >= 3
    w = connect("local")  # heal: put the POS rows back
    for ref, version in result.facts["versions_before"].items():
        layer, name = ref.split(".")
        sql(w, f"RESTORE TABLE retail_datalake.local_{layer}.{name} TO VERSION AS OF {version}", env="local")


def test_summary_points_at_the_source_or_at_a_backfill():
    import pandas as pd

    from retail_lakehouse.ops.data_freshness import FreshnessOutcome, summary_of

    late = pd.DataFrame({"table": ["bronze.pos_events", "silver.orders"], "status": ["STALE", "FRESH"],
                         "reason": ["newest business date 2024-01-03 is 2 days behind 2024-01-05 (SLA 1 days): "
                                    "its source has not sent newer data", "within SLA"]})
    s = summary_of(FreshnessOutcome(late), env="prod")
    assert s.status == "DIAGNOSED" and "1 of 2 table(s) miss their SLA, first bronze.pos_events" in s.diagnosis
    assert "check the source system" in s.next_step and "data_freshness.ipynb" in s.next_step
    built_late = late.assign(reason=["last written 30.0 h ago (SLA 26 h)", "within SLA"])
    s = summary_of(FreshnessOutcome(built_late), env="prod")
    assert "backfill.ipynb" in s.next_step and "-p start_date <FIRST_MISSING_DATE>" in s.next_step
    fresh = late.assign(status="FRESH", reason="within SLA")
    assert summary_of(FreshnessOutcome(fresh), env="prod").status == "NOTHING TO DO"
