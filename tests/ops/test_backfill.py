"""backfill: planning guards; the missing_day drill backfilled by the notebook, with bronze re-ingested too."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from retail_lakehouse.core.errors import ConfirmationRequired, ParameterError
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import backfill
from tests.ops._helpers import audit_rows, run_notebook

ORDERS = registry().get("silver.orders")
D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def test_plan_chooses_tasks_by_layer():
    p = backfill.make_plan(ORDERS, D1, D2, ["silver", "gold"], env="local")
    assert p.tasks == ["clean_orders", "clean_order_items", "build_fact_sales", "build_agg_daily_sales"]
    assert backfill.make_plan(ORDERS, D1, D2, ["gold"], env="local").tables == ["gold.fact_sales", "gold.agg_daily_sales"]
    assert p.parameters == {"backfill_start_date": "2024-01-01", "backfill_end_date": "2024-01-02"}


@pytest.mark.parametrize(("table", "start", "end", "layers", "match"), [
    ("silver.orders", D2, D1, ["silver"], "before the start"),
    ("silver.customers", D1, D2, ["silver"], "business date"),
    ("silver.orders", D1, D2, [], "layers"),
    ("gold.fact_sales", D1, D2, ["bronze"], "nothing to rebuild"),
])
def test_plan_rejects(table, start, end, layers, match):
    with pytest.raises(ParameterError, match=match):
        backfill.make_plan(registry().get(table), start, end, layers, env="local")


def test_plan_with_bronze_reingests_the_range_first():
    p = backfill.make_plan(ORDERS, D1, D2, ["bronze", "silver", "gold"], env="local")
    assert p.tasks == ["ingest_orders", "ingest_order_items", "clean_orders", "clean_order_items",
                       "build_fact_sales", "build_agg_daily_sales"]
    assert p.tables[:2] == ["bronze.orders", "bronze.order_items"]
    assert p.jobs == ["retail_ingestion", "retail_transformation"]
    pos = backfill.make_plan(registry().get("bronze.pos_events"), D1, D2, ["bronze"], env="local")
    assert (pos.tasks, pos.tables, pos.jobs) == (["ingest_pos_events"], ["bronze.pos_events"], ["retail_ingestion"])


def test_judge_lets_bronze_shrink_but_not_empty():
    p = backfill.make_plan(ORDERS, D1, D1, ["bronze", "silver"], env="local")
    before = pd.DataFrame({"table": ["bronze.orders", "silver.orders"], "day": [D1, D1], "rows": [5, 5]})
    assert backfill.judge(p, before, before.assign(rows=[4, 5]), pd.DataFrame()) == []
    assert backfill.judge(p, before, before.assign(rows=[0, 5]), pd.DataFrame()) == [
        f"bronze.orders has no rows for {D1}"]
    assert backfill.judge(p, before, before.assign(rows=[5, 4]), pd.DataFrame()) == [
        f"silver.orders lost rows on {D1}: 5 -> 4"]


def test_prod_needs_confirm_before_any_call():
    p = backfill.make_plan(ORDERS, D1, D2, ["silver"], env="prod")
    with pytest.raises(ConfirmationRequired):
        backfill.run(None, p, dry_run=False, confirm=False)  # type: ignore[arg-type]


def test_missing_day_backfilled(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    result = drills.run("missing_day")
    day = result.facts["day"]
    assert _local.count("silver.orders", f"order_date = DATE'{day}'") == 0
    text = run_notebook("backfill", tmp_path, **{**result.parameters, "dry_run": True})
    assert "DRY RUN" in text and _local.count("silver.orders", f"order_date = DATE'{day}'") == 0
    with pytest.raises(Exception, match="before the start"):
        run_notebook("backfill", tmp_path, **{**result.parameters, "start_date": "2024-02-01"})
    text = run_notebook("backfill", tmp_path, **result.parameters)
    assert "OUTCOME HELD" in text
    key = int(day.replace("-", ""))
    preds = {"silver.orders": f"order_date = DATE'{day}'", "silver.order_items": f"order_date = DATE'{day}'",
             "gold.fact_sales": f"date_key = {key}", "gold.agg_daily_sales": f"date_key = {key}"}
    for ref, n in result.facts["rows_before_incident"].items():
        assert _local.count(ref, preds[ref]) == n, ref
    assert {"DRY_RUN", "SUCCESS"} <= set(audit_rows("backfill")["outcome"])


def test_missing_day_in_bronze_reingested_from_source(demo_lakehouse, tmp_path):
    """The day is missing from bronze too: the ingestion job re-reads it from the OLTP database first."""
    from retail_lakehouse import engine
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    result = drills.run("missing_day")
    day = result.facts["day"]
    ingested_that_day = f"substring(updated_at, 1, 10) = '{day}'"
    bronze = {ref: _local.count(ref, ingested_that_day) for ref in ("bronze.orders", "bronze.order_items")}
    assert all(bronze.values())
    for ref in bronze:
        engine.sql(f"DELETE FROM {_local.full(ref)} WHERE {ingested_that_day}", env="local").collect()
    dry = run_notebook("backfill", tmp_path, **{**result.parameters, "layers": "bronze,silver,gold", "dry_run": True})
    assert "retail_ingestion" in dry and "ingest_orders" in dry
    text = run_notebook("backfill", tmp_path, **{**result.parameters, "layers": "bronze,silver,gold"})
    assert "OUTCOME HELD" in text
    for ref, n in bronze.items():
        assert _local.count(ref, ingested_that_day) == n, ref
    key = int(day.replace("-", ""))
    preds = {"silver.orders": f"order_date = DATE'{day}'", "silver.order_items": f"order_date = DATE'{day}'",
             "gold.fact_sales": f"date_key = {key}", "gold.agg_daily_sales": f"date_key = {key}"}
    for ref, n in result.facts["rows_before_incident"].items():
        assert _local.count(ref, preds[ref]) == n, ref
    audit = audit_rows("backfill")
    assert "local_bronze.orders" in audit["tables_changed"].iloc[-1]


def test_pos_landing_files_of_a_day_reingested(demo_lakehouse):
    """POS backfill: bronze rows from a day's landing files replaced by those files, read again."""
    import json

    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.pipeline import ingest
    from retail_lakehouse.sandbox.drills import _local

    settings = load_settings("local")
    landing = settings.local_path("landing")
    day = sorted(p.name for p in landing.iterdir() if p.is_dir())[1]
    prefix = f"{landing / day}/"
    from_day = f"substring(_source_file, 1, {len(prefix)}) = '{prefix}'"
    rows, total = _local.count("bronze.pos_events", from_day), _local.count("bronze.pos_events")
    progress = _local.count("monitoring.stream_progress")
    checkpoint = settings.local_path("checkpoints") / "pos_events" / "files.json"
    files_before = set(json.loads(checkpoint.read_text())["files"])
    assert rows
    engine.sql(f"DELETE FROM {_local.full('bronze.pos_events')} WHERE {from_day}", env="local").collect()
    d = dt.date.fromisoformat(day)
    result = ingest.ingest_pos(run_id="backfill-test", env="local", backfill_start_date=d, backfill_end_date=d)
    assert (result.mode, result.rows) == ("backfill", rows)
    assert _local.count("bronze.pos_events", from_day) == rows
    assert _local.count("bronze.pos_events") == total  # the other days untouched
    assert _local.count("monitoring.stream_progress") == progress  # not a micro-batch of the stream
    assert set(json.loads(checkpoint.read_text())["files"]) == files_before
    again = ingest.ingest_pos(run_id="backfill-test-2", env="local", backfill_start_date=d, backfill_end_date=d)
    assert again.rows == rows and _local.count("bronze.pos_events") == total  # replaced, not appended
    with pytest.raises(ParameterError, match="both"):
        ingest.ingest_pos(run_id="x", env="local", backfill_start_date=d)
