"""Drill: silver.orders rewritten as hundreds of tiny files, then queried on a column it is not partitioned by."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

TASKS = 60
QUERIES = 3


@register("small_files_slow_query", notebook="diagnose_slow_query",
          summary="silver.orders in tiny files + filters on customer_id -> slow queries")
def small_files_slow_query() -> DrillResult:
    """Rewrite silver.orders (same rows) with many write tasks, then run filtered queries through the warehouse."""
    from retail_lakehouse import engine
    from retail_lakehouse.databricks import statements, workspace
    from retail_lakehouse.engine import writes
    from retail_lakehouse.sandbox.drills import _local

    ref = "silver.orders"
    full = _local.full(ref)
    spark = engine.get_spark("local")
    rows = _local.count(ref)
    frame = spark.createDataFrame(spark.table(full).toArrow()).repartition(TASKS)
    writes.write_table(frame, ref, mode="overwrite", env="local")
    w = workspace.connect("local")
    customers = statements.run_sql(w, f"SELECT customer_id FROM {full} WHERE customer_id IS NOT NULL LIMIT {QUERIES}")
    query_ids = []
    for cid in customers["customer_id"]:
        statements.run_sql(w, f"SELECT order_id, total_amount FROM {full} WHERE customer_id = {int(cid)}")
    history = workspace.query_history(w, max_results=QUERIES)
    query_ids = [q for q, t in zip(history["query_id"], history["query_text"], strict=False) if "customer_id =" in str(t)]
    detail = statements.run_sql(w, f"DESCRIBE DETAIL {full}").iloc[0]
    return DrillResult(
        name="small_files_slow_query",
        notebook="diagnose_slow_query",
        description=f"{ref} holds its {rows} rows in {int(detail['numFiles'])} tiny files and is queried by customer_id.",
        parameters={"env": "local", "table": ref},
        facts={"files": int(detail["numFiles"]), "rows": rows, "query_ids": query_ids, "filter_column": "customer_id",
               "cause": "small_files"},
    )
