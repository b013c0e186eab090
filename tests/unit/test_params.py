"""Notebook parameter reading: conversion, validation, and no unchecked string reaching SQL."""

from __future__ import annotations

import datetime as dt

import pytest

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.core.params import Param, date_range, param


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


# ----------------------------------------------------------------------------- Parameters: the cell declares, the spec refines


def _cell(source: str) -> dict:
    """A notebook namespace after its parameters cell ran (annotated assignments fill `__annotations__`)."""
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - a test's own literal cell
    return namespace


CELL = '''
env: str = "local"  # environment
run_id: str = "manual"  # id of this ops run
table: str = "orders"  # table
start_date: str = "2024-01-01"  # first day
days: int = 3  # how many days
dry_run: bool = True  # only show
'''


def test_annotations_drive_names_order_and_kinds():
    from retail_lakehouse.core.params import Parameters

    ns = _cell(CELL)
    ns.update(days="5", dry_run="false", env="prod")  # as papermill or a widget may give them
    p = Parameters(table=Param("table", layer="silver"), start_date="date").read(ns)
    assert list(p) == ["env", "run_id", "table", "start_date", "days", "dry_run"]
    assert (p.env, p.days, p.dry_run, p.start_date) == ("prod", 5, False, dt.date(2024, 1, 1))
    assert p.table.ref == "silver.orders" and p["table"] is p.table
    assert p.audit == {"env": "prod", "run_id": "manual", "table": "silver.orders",
                       "start_date": dt.date(2024, 1, 1), "days": 5, "dry_run": False}
    with pytest.raises(AttributeError, match="no parameter 'tabel'"):
        p.tabel  # noqa: B018


def test_a_parameter_added_to_the_cell_needs_no_other_change():
    from retail_lakehouse.core.params import Parameters

    spec = Parameters(table=Param("table", layer="silver"))
    ns = _cell(CELL + 'limit: float = 0.5  # new\n')
    p = spec.read(ns)
    assert p.limit == 0.5 and p.audit["limit"] == 0.5
    assert spec.form_spec(ns)["limit"] == {"kind": "float"}


def test_bad_values_and_bad_specs_are_refused():
    from retail_lakehouse.core.params import Parameters

    ns = _cell(CELL)
    with pytest.raises(ParameterError, match="'days'.*not a valid int"):
        Parameters().read({**ns, "days": "3x"})
    with pytest.raises(ParameterError, match="'env'.*local, dev, qa, prod"):
        Parameters().read({**ns, "env": "production"})
    with pytest.raises(ParameterError, match="'tabel'.*parameters cell"):
        Parameters(tabel="table").read(ns)
    with pytest.raises(ParameterError, match="no annotated parameter"):
        Parameters().read({"table": "orders"})


def test_checks_unless_and_record():
    from retail_lakehouse.core.params import Parameters

    def positive(n):
        if n <= 0:
            raise ParameterError("days", "must be positive")
        return n

    spec = Parameters(
        table=Param("table", layer="silver", unless="run_id", record=lambda t: t.name),
        run_id=Param(required=False),
        start_date=Param(required=False),
        days=Param("int", check=positive),
        check=lambda v: {"start_date": v["start_date"] or "2024-01-31"},
    )
    ns = _cell(CELL)
    p = spec.read({**ns, "run_id": "", "start_date": ""})
    assert p.table.ref == "silver.orders" and p.audit["table"] == "orders" and p.start_date == "2024-01-31"
    assert spec.read({**ns, "table": "no such table"}).table is None  # run_id given: table not read
    with pytest.raises(ParameterError, match="positive"):
        spec.read({**ns, "days": 0})


def test_form_spec_follows_the_kinds(monkeypatch):
    from retail_lakehouse.core.params import Parameters

    monkeypatch.setenv("LAKEHOUSE_FORMS", "0")
    spec = Parameters(table=Param("table", layer="silver"), start_date="optional_date",
                      run_id=Param("choice", choices=["a", "b"]), days="identifier")
    ns = _cell(CELL)
    assert spec.form_spec(ns) == {
        "env": {"kind": "env"},
        "run_id": {"kind": "choice", "choices": ["a", "b"]},
        "table": {"kind": "table", "layer": "silver"},
        "start_date": {"kind": "optional_date"},
        "days": {"kind": "str"},
        "dry_run": {"kind": "bool"},
    }
    assert spec.form(ns) is None  # no form outside an interactive frontend
