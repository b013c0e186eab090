"""`retail_lakehouse.core.widgets.parameter_form`: a form in Jupyter, nothing under papermill."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import nbformat
import pytest

from retail_lakehouse.core import widgets
from retail_lakehouse.core.errors import ParameterError


@pytest.fixture
def forms_on(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_FORMS", "1")


def _fields(form):
    return {child.description: child for child in form.children[1:]}


def test_no_form_outside_jupyter(monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_FORMS", raising=False)
    ns = {"table": "orders"}
    assert widgets.form_enabled() is False
    assert widgets.parameter_form(ns, {"table": "table"}) is None
    assert ns == {"table": "orders"}


def test_env_override_off_wins(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_FORMS", "0")
    assert widgets.parameter_form({"env": "local"}, {"env": "env"}) is None


def test_form_fills_the_namespace(forms_on):
    ns = {"table": "orders", "start_date": "2024-01-01", "env": "local", "dry_run": True, "days": 3}
    spec = {
        "table": {"kind": "table", "layer": "silver"},
        "start_date": "date",
        "env": "env",
        "dry_run": "bool",
        "days": "int",
    }
    form = widgets.parameter_form(ns, spec)
    fields = _fields(form)
    assert set(fields) == set(spec)
    assert "customers" in fields["table"].options and fields["table"].value == "orders"
    assert fields["env"].options == ("local", "dev", "qa", "prod")
    assert fields["start_date"].value == dt.date(2024, 1, 1)
    assert ns["start_date"] == "2024-01-01"  # untouched fields keep the notebook's value

    fields["table"].value = "customers"
    fields["start_date"].value = dt.date(2024, 2, 29)
    fields["env"].value = "prod"
    fields["dry_run"].value = False
    fields["days"].value = 7
    assert ns == {
        "table": "customers",
        "start_date": "2024-02-29",
        "env": "prod",
        "dry_run": False,
        "days": 7,
    }


def test_optional_date_cleared_gives_empty_text(forms_on):
    ns = {"as_of": ""}
    field = _fields(widgets.parameter_form(ns, {"as_of": "optional_date"}))["as_of"]
    assert field.value is None
    field.value = dt.date(2024, 1, 3)
    assert ns["as_of"] == "2024-01-03"
    field.value = None
    assert ns["as_of"] == ""


def test_table_without_layer_lists_layer_qualified_names(forms_on):
    field = _fields(widgets.parameter_form({"table": "gold.fact_sales"}, {"table": "table"}))["table"]
    assert "gold.fact_sales" in field.options and "silver.orders" in field.options
    assert field.value == "gold.fact_sales"


def test_choice_and_unknown_kind(forms_on):
    ns = {"action": "diagnose"}
    field = _fields(
        widgets.parameter_form(ns, {"action": {"kind": "choice", "choices": ["diagnose", "retry"]}})
    )
    field["action"].value = "retry"
    assert ns["action"] == "retry"
    with pytest.raises(ParameterError, match="unknown"):
        widgets.parameter_form(ns, {"action": "colour"})
    with pytest.raises(ParameterError, match="choices"):
        widgets.parameter_form(ns, {"action": "choice"})


def test_spec_must_name_parameters(forms_on):
    with pytest.raises(ParameterError, match="parameters cell"):
        widgets.parameter_form({"table": "orders"}, {"tabel": "table"})


NOTEBOOK_CELLS = [
    (
        'table = "orders"  # table\nstart_date = "2024-01-01"  # first day\nenv = "local"  # environment',
        ["parameters"],
    ),
    (
        "from retail_lakehouse.core.widgets import parameter_form; "
        'parameter_form(globals(), {"table": "table", "start_date": "date", "env": "env"})',
        [],
    ),
    ("print(table, start_date, env)", []),
]


def test_papermill_run_is_untouched(tmp_path, monkeypatch):
    """Under papermill the form cell shows nothing and the injected parameters are the ones used."""
    import papermill

    monkeypatch.delenv("LAKEHOUSE_FORMS", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in NOTEBOOK_CELLS]
    source, output = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters={"table": "customers", "env": "prod"},
        progress_bar=False,
        kernel_name="python3",
    )
    cells = nbformat.read(output, as_version=4).cells
    form_cell = next(c for c in cells if "parameter_form(" in c.source)
    assert form_cell.outputs == []
    printed = "".join(o.get("text", "") for o in cells[-1].outputs)
    assert printed.strip() == "customers 2024-01-01 prod"


def test_interactive_frontend_is_detected():
    """A frontend that allows stdin (JupyterLab, Notebook, VS Code) gets the form; nbclient's requests do not."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = "from retail_lakehouse.core.widgets import form_enabled; print(form_enabled())"

        def run(allow_stdin: bool) -> str:
            out: list[str] = []

            def hook(msg):
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])

            kc.execute_interactive(code, allow_stdin=allow_stdin, output_hook=hook, timeout=60)
            return "".join(out).strip()

        assert run(True) == "True"
        assert run(False) == "False"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_spec_kinds_documented():
    doc = textwrap.dedent(widgets.parameter_form.__doc__ or "")
    for kind in ("table", "date", "optional_date", "env", "bool", "int", "float", "str"):
        assert f'"{kind}"' in doc
    assert json.dumps(widgets.KINDS)
