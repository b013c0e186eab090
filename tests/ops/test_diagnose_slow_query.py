"""diagnose_slow_query: pure analysis on small inputs; the small_files_slow_query drill diagnosed by the notebook."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.ops import diagnose_slow_query as dsq
from tests.ops._helpers import audit_rows, run_notebook


def test_file_size_summary_and_history_sizes():
    history = pd.DataFrame([
        {"operation": "WRITE", "operationParameters": {"mode": "Append"},
         "operationMetrics": {"numFiles": "4", "numOutputBytes": "4000"}},
        {"operation": "WRITE", "operationParameters": {"mode": "Overwrite"},
         "operationMetrics": {"numFiles": "2", "numOutputBytes": "200000000"}},
        {"operation": "WRITE", "operationParameters": {"mode": "Append"},
         "operationMetrics": {"numFiles": "9", "numOutputBytes": "9"}},
    ])
    sizes = dsq.sizes_from_history(history)
    assert sizes == [1000] * 4 + [100000000] * 2  # stops at the overwrite
    s = dsq.file_size_summary(sizes)
    assert s["files"] == 6 and s["small_files"] == 4 and s["small_file_ratio"] == round(4 / 6, 3)


def test_filter_columns_and_skew():
    queries = ["SELECT * FROM t WHERE customer_id = 4 AND order_date >= '2024-01-01'",
               "select x from t where `customer_id` in (1,2) group by x"]
    assert dsq.filter_columns(queries, ["customer_id", "order_date", "x"]) == {"customer_id": 2, "order_date": 1}
    skew = dsq.partition_skew(pd.DataFrame({"rows": [1000, 10, 12, 11]}))
    assert skew["skew_ratio"] > 50


def test_recommendations_rank_small_files_first():
    recs = dsq.recommend(
        table="t", detail={"numFiles": 400, "sizeInBytes": 4_000_000},
        files=dsq.file_size_summary([10_000] * 400), skew={"skew_ratio": 1.1, "partitions": 7},
        filters={"customer_id": 3}, partition_by=["order_date"], zorder_by=[], writes_since_optimize=5,
        slow_queries=3)
    assert recs["recommendation"].iloc[0].startswith("OPTIMIZE t ZORDER BY (customer_id)")
    assert all(recs["evidence"].str.len() > 0)
    assert any("small: 2 workers i3.xlarge" in r for r in recs["recommendation"])


def test_query_id_is_checked():
    assert dsq.check_query_id("") == ""
    with pytest.raises(ParameterError):
        dsq.check_query_id("x'; DROP TABLE t")


def test_small_files_slow_query_drill_diagnosed_and_fixed(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills
    from retail_lakehouse.sandbox.drills import _local

    result = drills.run("small_files_slow_query")
    assert result.facts["files"] >= 100
    with pytest.raises(Exception, match="unknown table"):
        run_notebook("diagnose_slow_query", tmp_path, env="local", table="orders_typo")
    with pytest.raises(Exception, match="confirm"):
        run_notebook("diagnose_slow_query", tmp_path, **{**result.parameters, "env": "prod"})
    # From a query id of the warehouse's query history (the history lives in the workspace the drill used).
    from retail_lakehouse.databricks.workspace import connect

    w = connect("local")
    tdef, queries = dsq.resolve_target(w, "", result.facts["query_ids"][0], env="local")
    assert tdef.ref == "gold.fact_sales"
    _, queries = dsq.resolve_target(w, "gold.fact_sales", "", env="local")
    d = dsq.diagnose(w, tdef, queries, env="local")
    assert d.cause == "small_files" and d.filters.get("customer_sk", 0) >= 1
    assert "ZORDER BY (customer_sk)" in d.recommendations["recommendation"].iloc[0]
    assert dsq.zorder_columns(d) == ["customer_sk"]
    # The engineer's run: diagnose, OPTIMIZE ZORDER BY customer_sk, the slow queries timed before and after.
    text = run_notebook("diagnose_slow_query", tmp_path, **result.parameters)
    assert "DIAGNOSIS (small_files)" in text and "OPTIMIZE held" in text
    summary = text[text.index("===== SUMMARY of diagnose_slow_query: HELD ====="):]
    assert re.search(r"slow queries [0-9.]+ s -> [0-9.]+ s", summary)
    assert _local.count("gold.fact_sales") == result.facts["rows"]
    from retail_lakehouse.databricks.statements import run_sql

    assert int(run_sql(w, f"DESCRIBE DETAIL {_local.full('gold.fact_sales')}")["numFiles"].iloc[0]) < result.facts["files"]
    assert "SUCCESS" in set(audit_rows("diagnose_slow_query")["outcome"])


def test_query_id_served_by_another_process(demo_lakehouse, tmp_path):
    """As an engineer tries it: a query run through the local workspace in one process (now ended), then
    `papermill diagnose_slow_query.ipynb -p query_id <id>` in a new one (the history is kept under LAKEHOUSE_HOME)."""
    import subprocess
    import sys

    from tests.ops._helpers import ROOT

    code = (
        "from retail_lakehouse.databricks.workspace import connect\n"
        "w = connect('local')\n"
        "r = w.statement_execution.execute_statement("
        "'SELECT order_id, total_amount FROM retail_datalake.local_silver.orders WHERE customer_id = 7', "
        "'local-warehouse', wait_timeout='30s')\n"
        "assert r.status.state.value == 'SUCCEEDED', r.status\n"
        "print(r.statement_id)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    query_id = proc.stdout.strip().splitlines()[-1]
    text = run_notebook("diagnose_slow_query", tmp_path, env="local", query_id=query_id)
    assert "retail_datalake.local_silver.orders" in text and "DIAGNOSIS (" in text
    assert "customer_id" in text  # the column its WHERE clause filters on
    details = audit_rows("diagnose_slow_query")["parameters"].iloc[-1]
    assert query_id in details
    with pytest.raises(Exception, match="no query"):
        run_notebook("diagnose_slow_query", tmp_path, env="local", query_id="01f0-not-a-query")
