"""Drill: gold.fact_sales rewritten as hundreds of tiny files, then queried on a column it is not partitioned by."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

TASKS = 60
QUERIES = 3
REF = "gold.fact_sales"


@register("small_files_slow_query", notebook="diagnose_slow_query",
          summary="gold.fact_sales in tiny files + filters on customer_sk -> slow queries, OPTIMIZE ZORDER timed")
def small_files_slow_query() -> DrillResult:
    """Rewrite gold.fact_sales (same rows) with many write tasks, then run filtered queries through the warehouse."""
    from retail_lakehouse import engine
    from retail_lakehouse.databricks import statements, workspace
    from retail_lakehouse.engine import writes
    from retail_lakehouse.sandbox.drills import _local

    full = _local.full(REF)
    spark = engine.get_spark("local")
    rows = _local.count(REF)
    frame = spark.createDataFrame(spark.table(full).toArrow()).repartition(TASKS)
    writes.write_table(frame, REF, mode="overwrite", env="local")
    w = workspace.connect("local")
    customers = statements.run_sql(w, f"SELECT DISTINCT customer_sk FROM {full} WHERE customer_sk IS NOT NULL LIMIT {QUERIES}")
    for sk in customers["customer_sk"]:
        statements.run_sql(w, f"SELECT order_id, net_amount FROM {full} WHERE customer_sk = {int(sk)}")
    history = workspace.query_history(w, max_results=QUERIES)
    query_ids = [q for q, t in zip(history["query_id"], history["query_text"], strict=False) if "customer_sk =" in str(t)]
    detail = statements.run_sql(w, f"DESCRIBE DETAIL {full}").iloc[0]
    return DrillResult(
        name="small_files_slow_query",
        notebook="diagnose_slow_query",
        description=f"{REF} holds its {rows} rows in {int(detail['numFiles'])} tiny files and is queried by "
        "customer_sk. Diagnose it, then run the recommended OPTIMIZE ZORDER and time the queries again.",
        parameters={"env": "local", "table": REF, "action": "optimize", "dry_run": False},
        facts={"files": int(detail["numFiles"]), "rows": rows, "query_ids": query_ids, "filter_column": "customer_sk",
               "cause": "small_files"},
    )
