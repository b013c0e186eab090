"""Notebook parameter reading: conversion, validation, and no unchecked string reaching SQL."""

from __future__ import annotations

import datetime as dt

import pytest

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.core.params import date_range, param


def test_conversions():
    assert param("n", "42", kind="int") == 42
    assert param("x", "1.5", kind="float") == 1.5
    assert param("b", "true", kind="bool") is True and param("b", "0", kind="bool") is False
    assert param("d", "2024-01-31", kind="date") == dt.date(2024, 1, 31)
    assert param("d", "", kind="optional_date") is None
    assert param("l", "a, b,,c", kind="list") == ["a", "b", "c"]
    assert param("env", "prod", kind="env") == "prod"


def test_table_parameters_resolve_through_the_registry():
    assert param("table", "orders", kind="table", layer="silver").ref == "silver.orders"
    assert param("table", "retail_datalake.local_gold.fact_sales", kind="table").ref == "gold.fact_sales"


@pytest.mark.parametrize(
    "value",
    ["orders; DROP TABLE x", "orders' OR '1'='1", "gold.fact_sales --", "no_such_table", "a.b.c.d", ""],
)
def test_injection_and_unknown_tables_are_refused(value):
    with pytest.raises(ParameterError, match="table"):
        param("table", value, kind="table", layer="silver")


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("int", "12abc", "not a valid int"),
        ("int", True, "not a number"),
        ("bool", "maybe", "not a boolean"),
        ("date", "31/01/2024", "YYYY-MM-DD"),
        ("date", "", "a date is required"),
        ("env", "production", "local, dev, qa, prod"),
        ("identifier", "x; drop", "not an identifier"),
        ("str", "  ", "must not be empty"),
    ],
)
def test_bad_values_say_what_to_fix(kind, value, message):
    with pytest.raises(ParameterError, match=message):
        param("p", value, kind=kind)


def test_bounds_and_choices():
    with pytest.raises(ParameterError, match="minimum"):
        param("retention_hours", "24", kind="int", minimum=168)
    with pytest.raises(ParameterError, match="one of"):
        param("layer", "platinum", kind="choice", choices=["silver", "gold"])
    with pytest.raises(ParameterError, match="not allowed"):
        param("layers", "bronze,diamond", kind="list", choices=["bronze", "silver", "gold"])


def test_date_range_order():
    date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 2))
    with pytest.raises(ParameterError, match="before the start"):
        date_range(dt.date(2024, 1, 2), dt.date(2024, 1, 1))


def test_widget_value_wins_on_databricks(monkeypatch):
    """On Databricks the same names arrive as widgets: the widget's value is read, then validated."""

    class Widgets:
        def get(self, name):
            if name == "start_date":
                return "2024-02-01"
            raise ValueError("no widget")

    class DbUtils:
        widgets = Widgets()

    class Shell:
        user_ns = {"dbutils": DbUtils()}

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    assert param("start_date", "2024-01-01", kind="date") == dt.date(2024, 2, 1)
    assert param("end_date", "2024-01-05", kind="date") == dt.date(2024, 1, 5)
