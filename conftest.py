"""Notebook runs under nbmake: a prepared local lakehouse, one shared engine, pipeline order.

Notebooks run with their default parameters (env `local`). Before the first one, a small source
data set is generated into a fresh LAKEHOUSE_HOME and the embedded engine is started, so every
notebook kernel connects to it (SPARK_REMOTE) instead of starting its own. Notebooks are ordered as
the jobs run them: ingestion, bronze_to_silver (dependencies first), silver_to_gold, quality, ops.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_ORDER = [
    "ingestion/",
    "clean_customers",
    "clean_products",
    "clean_stores",
    "clean_orders",
    "clean_order_items",
    "clean_pos_transactions",
    "build_dim_date",
    "build_dim_customer",
    "build_dim_product",
    "build_dim_store",
    "build_fact_sales",
    "build_agg_daily_sales",
    "quality/",
    "ops_notebooks/",
]


def _nbmake(config) -> bool:
    return bool(getattr(config.option, "nbmake", False))


def pytest_configure(config):
    if not _nbmake(config):
        return
    home = Path(tempfile.mkdtemp(prefix="lakehouse-nbmake-"))
    os.environ["LAKEHOUSE_HOME"] = str(home)
    os.environ["LAKEHOUSE_ENV"] = "local"
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.sandbox.generate import generate

    settings = load_settings("local")
    generate(
        home,
        scale_factor=0.05,
        days=3,
        oltp_path=settings.sqlite_path(),
        landing_dir=settings.local_path("landing"),
    )
    engine.start_local_server(settings)


def pytest_collection_modifyitems(config, items):
    if not _nbmake(config):
        return

    def rank(item) -> int:
        path = str(item.path)
        return next((i for i, key in enumerate(_ORDER) if key in path), len(_ORDER))

    items.sort(key=rank)


def pytest_unconfigure(config):
    if _nbmake(config):
        from retail_lakehouse import engine

        engine.stop_local_server()
