"""Environments and the table registry: names, layers, schemas, and clear errors."""

from __future__ import annotations

import pytest

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import ConfigError, TableNotFoundError
from retail_lakehouse.core.tables import _parse, registry, spark_type_to_arrow


@pytest.mark.parametrize("env", ["local", "dev", "qa", "prod"])
def test_every_environment_names_the_runbook_schemas(env):
    settings = load_settings(env)
    assert settings.catalog == "retail_datalake"
    assert settings.qualified("gold", "fact_sales") == f"retail_datalake.{env}_gold.fact_sales"
    assert "token" not in str(settings.databricks).lower()


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="local, dev, qa, prod"):
        load_settings("staging")


def test_local_paths_live_under_lakehouse_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    settings = load_settings("local")
    assert settings.warehouse == tmp_path / "warehouse"
    assert settings.oltp_url == f"jdbc:sqlite://{tmp_path}/sources/store_oltp.sqlite"
    with pytest.raises(ConfigError, match="only `local`"):
        load_settings("prod").warehouse  # noqa: B018


def test_registry_is_complete_and_consistent():
    reg = registry()
    layers = {t.layer for t in reg}
    assert layers == {"bronze", "silver", "gold", "monitoring"}
    for t in reg:
        assert t.columns, t.ref
        assert set(t.keys) <= set(t.columns) and set(t.partition_by) <= set(t.columns)
        assert spark_type_to_arrow(next(iter(t.columns.values())))
    assert reg.get("fact_sales").partition_by == ("date_key",)
    assert "_failed_rules" in reg.get("orders_quarantine").columns
    for bronze in reg.in_layer("bronze"):
        assert {"_ingested_at", "_source_system", "_run_id", "_source_file"} <= set(bronze.columns)


def test_names_resolve_in_every_form():
    reg = registry()
    for name in ("silver.orders", "local_silver.orders", "retail_datalake.local_silver.orders"):
        assert reg.get(name).ref == "silver.orders"
    with pytest.raises(TableNotFoundError, match="ambiguous; say which one: bronze.orders, silver.orders"):
        reg.get("orders")
    with pytest.raises(TableNotFoundError, match="catalog 'other'"):
        reg.get("other.local_silver.orders")
    with pytest.raises(TableNotFoundError, match="known tables"):
        reg.get("ordrs", layer="silver")


def test_a_bad_registry_reports_every_problem():
    raw = {
        "tables": [
            {"name": "t1", "layer": "platinum", "columns": {"a": "string"}},
            {"name": "t2", "layer": "gold", "columns": {"a": "varchar2"}, "keys": ["b"]},
        ]
    }
    with pytest.raises(ConfigError) as info:
        _parse(raw)
    text = str(info.value)
    assert "layer must be one of" in text and "'b' is not a column" in text and "varchar2" in text
