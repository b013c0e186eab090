"""Interactive parameter forms for the ops notebooks: ipywidgets in Jupyter, inert under papermill.

An ops notebook calls, right after its `parameters` cell::

    from retail_lakehouse.core.widgets import parameter_form; parameter_form(globals(), {"table": "table", "env": "env"})

Run interactively in Jupyter, this shows a form (table dropdown from the registry, date pickers,
environment dropdown, ...) whose values are written into the notebook's parameter variables as
they change; the cells below then read them as usual. Run by papermill, nbmake or
`jupyter nbconvert --execute`, it does nothing and returns None, so the output and the injected
parameters are untouched.

How "interactive" is decided: a headless executor (every nbclient-based one: papermill, nbmake,
nbconvert) sends each cell with `allow_stdin=False`, because nobody can answer `input()`;
Jupyter frontends (JupyterLab, Notebook, VS Code) send `allow_stdin=True`. That flag is read from
the kernel's current execute request: it does not depend on which parameters were injected, or on
an environment variable the executor would have to set. On Databricks (where `dbutils` exists)
the notebook's widgets are Databricks widgets, so no form is shown either. The environment
variable `LAKEHOUSE_FORMS` overrides the decision: `1` always shows the form, `0` never.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import ENVIRONMENTS
from retail_lakehouse.core.errors import ParameterError

if TYPE_CHECKING:
    import ipywidgets

KINDS = ("table", "date", "optional_date", "env", "bool", "int", "float", "choice", "str", "list")


def form_enabled() -> bool:
    """Whether a form should be shown: an interactive Jupyter frontend, not papermill/nbmake/Databricks."""
    override = os.environ.get("LAKEHOUSE_FORMS", "").strip().lower()
    if override in ("1", "true", "yes", "on"):
        return True
    if override in ("0", "false", "no", "off"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if shell is None or kernel is None or "dbutils" in shell.user_ns:
        return False
    try:
        parent = kernel.get_parent("shell")
    except Exception:  # noqa: BLE001 - ipykernel < 6 has no get_parent: fall back to the flag it keeps
        return bool(getattr(kernel, "_allow_stdin", False))
    content = parent.get("content", {}) if isinstance(parent, Mapping) else {}
    return bool(content.get("allow_stdin", False))


def _normalize(name: str, entry: Any) -> dict[str, Any]:
    options = {"kind": entry} if isinstance(entry, str) else dict(entry or {})
    kind = options.setdefault("kind", "str")
    if kind not in KINDS:
        raise ParameterError(name, f"form kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if kind == "choice" and not options.get("choices"):
        raise ParameterError(name, "a `choice` form field needs `choices`")
    return options


def _table_options(layer: str | None, current: str) -> list[str]:
    from retail_lakehouse.core.tables import registry

    tables = registry()
    names = [t.name for t in tables.in_layer(layer)] if layer else [f"{t.layer}.{t.name}" for t in tables]
    names = sorted(set(names))
    if current and current not in names:
        names.insert(0, current)
    return names


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None


def field_widget(name: str, options: Mapping[str, Any], value: Any) -> ipywidgets.Widget:
    """The input widget for one parameter, preset to the notebook's current value."""
    import ipywidgets as w

    kind = options["kind"]
    label = options.get("description", name)
    common = {"description": label, "style": {"description_width": "initial"}}
    if kind == "table":
        choices = _table_options(options.get("layer"), str(value or ""))
        return w.Dropdown(options=choices, value=str(value) if value in choices else choices[0], **common)
    if kind in ("env", "choice"):
        choices = list(ENVIRONMENTS if kind == "env" else options["choices"])
        if value not in choices and value not in (None, ""):
            choices.insert(0, str(value))
        return w.Dropdown(options=choices, value=value if value in choices else choices[0], **common)
    if kind in ("date", "optional_date"):
        return w.DatePicker(value=_as_date(value), **common)
    if kind == "bool":
        return w.Checkbox(
            value=bool(value) and str(value).lower() not in ("false", "0"), indent=False, **common
        )
    if kind == "int":
        return w.IntText(value=int(value or 0), **common)
    if kind == "float":
        return w.FloatText(value=float(value or 0), **common)
    return w.Text(value="" if value is None else str(value), **common)


def to_parameter(kind: str, widget_value: Any, original: Any) -> Any:
    """A widget value converted to what the notebook's variable holds (dates as ISO text, like papermill)."""
    if kind in ("date", "optional_date"):
        if widget_value is None:
            return None if original is None else ""
        return widget_value if isinstance(original, dt.date) else widget_value.isoformat()
    return widget_value


def parameter_form(namespace: MutableMapping[str, Any], spec: Mapping[str, Any]) -> ipywidgets.Widget | None:
    """A form filling the notebook's parameter variables, shown only when run interactively.

    Args:
        namespace: the notebook's globals (`globals()`), holding the parameters cell's variables.
        spec: parameter name -> kind (``"table"``, ``"date"``, ``"optional_date"``, ``"env"``,
            ``"bool"``, ``"int"``, ``"float"``, ``"str"``, ``"list"``) or a dict with ``kind`` and
            options: ``layer`` (tables of one layer), ``choices`` (for ``choice``), ``description``.

    Returns:
        The form widget (display it as the cell's result), or None under papermill, nbmake or
        Databricks, where nothing is changed.

    Raises:
        ParameterError: the spec names a variable the namespace lacks or an unknown kind.
    """
    fields = {name: _normalize(name, entry) for name, entry in spec.items()}
    missing = [name for name in fields if name not in namespace]
    if missing:
        raise ParameterError(missing[0], "is not a variable of the notebook's parameters cell")
    if not form_enabled():
        return None
    import ipywidgets as w

    rows: list[w.Widget] = [
        w.HTML(
            "<b>Parameters</b>: change them here, then run the cells below (papermill runs ignore this form)."
        )
    ]
    for name, options in fields.items():
        original = namespace[name]
        widget = field_widget(name, options, original)

        def update(
            change: dict[str, Any], name: str = name, kind: str = options["kind"], original: Any = original
        ):
            namespace[name] = to_parameter(kind, change["new"], original)

        widget.observe(update, names="value")  # untouched fields keep the notebook's own value
        rows.append(widget)
    return w.VBox(rows)
