"""backfill: planning guards; the missing_day drill backfilled by the notebook."""

from __future__ import annotations

import datetime as dt

import pytest

from retail_lakehouse.errors import ConfirmationRequired, ParameterError
from retail_lakehouse.ops import backfill
from retail_lakehouse.tables import registry
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
    ("silver.orders", D1, D2, ["bronze"], "bronze"),
])
def test_plan_rejects(table, start, end, layers, match):
    with pytest.raises(ParameterError, match=match):
        backfill.make_plan(registry().get(table), start, end, layers, env="local")


def test_prod_needs_confirm_before_any_call():
    p = backfill.make_plan(ORDERS, D1, D2, ["silver"], env="prod")
    with pytest.raises(ConfirmationRequired):
        backfill.run(None, p, dry_run=False, confirm=False)  # type: ignore[arg-type]


def test_missing_day_backfilled(demo_lakehouse, tmp_path):
    from retail_lakehouse import drills
    from retail_lakehouse.drills import _local

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
