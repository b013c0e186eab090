"""Lineage (what restore and rebuild_from_source reprocess) comes from what the pipeline declares:
the silver rule sets' sources and the gold builds' SOURCES; the builds are held to SOURCES."""

from __future__ import annotations

import ast
import inspect
import re

from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops._delta import downstream, lineage
from retail_lakehouse.pipeline import gold, silver

REF = re.compile(r"^(silver|gold)\.[a-z_]+$")


def test_every_silver_table_comes_from_its_rule_sets_bronze_source():
    graph = lineage()
    for name in silver.SILVER_TABLES:
        source = silver.rule_set(name).source
        assert registry().get(source).layer == "bronze"
        assert graph[source] == [f"silver.{name}", f"silver.{name}_quarantine"]


def test_gold_builds_read_only_what_sources_declare():
    """Every table literal in a gold build function (or the helpers it calls) is its own target or
    a declared source of some build; and every declared source is read somewhere."""
    tree = ast.parse(inspect.getsource(gold))
    literals = {
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and REF.match(node.value)
    }  # fmt: skip
    declared = set(gold.SOURCES) | {s for sources in gold.SOURCES.values() for s in sources}
    assert literals - declared == set()
    read = {s for sources in gold.SOURCES.values() for s in sources}
    assert read - literals == set(), "a declared source that no build reads"


def test_fact_sales_reads_its_dimensions_and_silver():
    assert set(gold.SOURCES["gold.fact_sales"]) == {
        "silver.order_items", "silver.orders", "silver.customers",
        "gold.dim_customer", "gold.dim_product", "gold.dim_store",
    }  # fmt: skip


def test_downstream_in_build_order():
    assert downstream("silver.customers") == ["gold.dim_customer", "gold.fact_sales", "gold.agg_daily_sales"]
    assert downstream("bronze.orders") == [
        "silver.orders", "silver.orders_quarantine", "gold.fact_sales", "gold.agg_daily_sales",
    ]  # fmt: skip
    assert downstream("gold.agg_daily_sales") == []


def test_every_gold_table_of_the_registry_has_a_build():
    gold_tables = {t.ref for t in registry().in_layer("gold")}
    assert gold_tables == set(gold.SOURCES)
