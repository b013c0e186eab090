"""Notebook parameters: one reader for papermill-injected values and Databricks widgets.

A notebook's `parameters` cell defines typed defaults; papermill overrides them by injecting a cell,
and on Databricks the same names arrive as widgets. `param()` takes the name and the value the
notebook holds, prefers a widget when running on Databricks, converts it to the wanted kind and
validates it, so no string reaches SQL unchecked:

    table = param("table", table, kind="table", layer="silver")
    start = param("start_date", start_date, kind="date")
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Literal

from retail_lakehouse.core.config import ENVIRONMENTS
from retail_lakehouse.core.errors import ParameterError, TableNotFoundError

Kind = Literal["str", "int", "float", "bool", "date", "optional_date", "table", "identifier", "choice", "list", "env"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _widget(name: str) -> str | None:
    """A Databricks widget value, when running on Databricks and the widget exists."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    dbutils = shell.user_ns.get("dbutils") if shell is not None else None
    if dbutils is None:
        return None
    try:
        return dbutils.widgets.get(name)
    except Exception:  # noqa: BLE001 - a missing widget means "use the notebook's value"
        return None


def param(
    name: str,
    value: Any,
    *,
    kind: Kind = "str",
    choices: Sequence[str] | None = None,
    layer: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    required: bool = True,
) -> Any:
    """Read, convert and validate one notebook parameter.

    Args:
        name: parameter name (as in the `parameters` cell and the Databricks widget).
        value: the notebook's current value (default or papermill-injected).
        kind: what the value must be; ``table`` returns the registry's TableDef, ``date`` a
            `datetime.date`, ``optional_date`` a date or None, ``list`` a list of str, ``env`` one
            of local/dev/qa/prod.
        choices: allowed values for ``choice`` (and for each item of ``list`` when given).
        layer: layer for ``table`` short names.
        minimum: lower bound for numbers.
        maximum: upper bound for numbers.
        required: for ``str``/``identifier``, reject an empty value.

    Raises:
        ParameterError: the value cannot be converted or is not allowed; the message says which
            values are accepted.
    """
    widget = _widget(name)
    raw = widget if widget is not None else value
    try:
        return _convert(name, raw, kind, choices, layer, minimum, maximum, required)
    except ParameterError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParameterError(name, f"{raw!r} is not a valid {kind}: {exc}") from None


def _convert(
    name: str,
    raw: Any,
    kind: str,
    choices: Sequence[str] | None,
    layer: str | None,
    minimum: float | None,
    maximum: float | None,
    required: bool,
) -> Any:
    if kind == "str":
        text = "" if raw is None else str(raw)
        if required and not text.strip():
            raise ParameterError(name, "must not be empty")
        return text
    if kind in ("int", "float"):
        if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
            raise ParameterError(name, f"{raw!r} is not a number")
        number = int(str(raw).strip()) if kind == "int" else float(raw)
        if minimum is not None and number < minimum:
            raise ParameterError(name, f"{number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ParameterError(name, f"{number} is above the maximum {maximum}")
        return number
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ParameterError(name, f"{raw!r} is not a boolean; use true or false")
    if kind in ("date", "optional_date"):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if kind == "optional_date":
                return None
            raise ParameterError(name, "a date is required, as YYYY-MM-DD")
        if isinstance(raw, dt.datetime):
            return raw.date()
        if isinstance(raw, dt.date):
            return raw
        try:
            return dt.date.fromisoformat(str(raw).strip())
        except ValueError:
            raise ParameterError(name, f"{raw!r} is not a date; use YYYY-MM-DD, e.g. 2024-01-31") from None
    if kind == "identifier":
        text = str(raw or "").strip()
        if not text and not required:
            return ""
        if not _IDENT.match(text):
            raise ParameterError(name, f"{raw!r} is not an identifier (letters, digits, underscore)")
        return text
    if kind == "table":
        from retail_lakehouse.core.tables import registry

        try:
            return registry().get(str(raw or ""), layer=layer)
        except TableNotFoundError as exc:
            raise ParameterError(name, str(exc)) from None
    if kind in ("choice", "env"):
        allowed = list(ENVIRONMENTS) if kind == "env" else list(choices or [])
        text = str(raw).strip()
        if text not in allowed:
            raise ParameterError(name, f"{raw!r} is not allowed; use one of {', '.join(allowed)}")
        return text
    if kind == "list":
        items = list(raw) if isinstance(raw, list | tuple) else [p.strip() for p in str(raw or "").split(",")]
        items = [str(i).strip() for i in items if str(i).strip()]
        if choices is not None:
            unknown = [i for i in items if i not in choices]
            if unknown:
                raise ParameterError(name, f"{unknown} not allowed; use some of {', '.join(choices)}")
        return items
    raise ParameterError(name, f"unknown parameter kind {kind!r}")


def date_range(start: dt.date | None, end: dt.date | None, *, name: str = "end_date") -> None:
    """Check that a date range is ordered.

    Raises:
        ParameterError: the end is before the start.
    """
    if start and end and end < start:
        raise ParameterError(name, f"{end} is before the start {start}; swap them")
