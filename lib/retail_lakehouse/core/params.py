"""Notebook parameters, declared once in the notebook's `parameters` cell; read, validated and recorded.

The `parameters` cell is the single declaration of a notebook's parameters: one annotated, commented
assignment each (`table: str = "orders"  # table to backfill`). Papermill overrides them by injecting
a cell (`-p table customers`), `papermill --help-notebook` and the book list them from it, and on
Databricks the same names arrive as widgets.

An ops procedure's module adds only what an annotation cannot say: a kind beyond `str`, `bool`,
`int` and `float` (a registered table, a date, a choice, ...), bounds, and the procedure's own
checks, as a `Parameters` spec::

    PARAMETERS = Parameters(
        table=Param("table", layer="silver"),
        start_date="date",
        layers=Param("list", choices=LAYERS),
    )

and its notebook wires them after the parameters cell::

    backfill.PARAMETERS.form(globals())      # the interactive form (nothing under papermill)
    p = backfill.PARAMETERS.read(globals())  # validated values: p.table, p.start_date, ...
    with audited(w, ..., parameters=p.audit, ...):  # what the audit row records

Names, order and types come from the notebook's namespace: a cell's annotated assignments fill its
`__annotations__` (in cell order; papermill's injected cell assigns without annotations). So a
parameter added to the cell is validated by its annotation, shown in the form and recorded in the
audit row with no other change; keep annotated assignments in the parameters cell only. A parameter
without an entry in the spec is read by its annotation (one named `env` as an environment). Every
value goes through `param()`, which prefers a Databricks widget, converts it and validates it, so no
string reaches SQL unchecked. Pipeline notebooks call `param()` directly::

    table = param("table", table, kind="table", layer="silver")
    start = param("start_date", start_date, kind="date")
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from retail_lakehouse.core.config import ENVIRONMENTS
from retail_lakehouse.core.errors import ParameterError, TableNotFoundError
from retail_lakehouse.core.tables import TableDef

if TYPE_CHECKING:
    import ipywidgets

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


@dataclass(frozen=True)
class _Spec:
    """What a parameter's value is checked against (the options of `param`)."""

    name: str
    choices: Sequence[str] | None
    layer: str | None
    minimum: float | None
    maximum: float | None
    required: bool


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
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ParameterError(name, f"unknown parameter kind {kind!r}; known: {', '.join(sorted(_CONVERTERS))}")
    return converter(raw, _Spec(name, choices, layer, minimum, maximum, required), kind)


def _to_str(raw: Any, spec: _Spec, kind: str) -> str:
    text = "" if raw is None else str(raw)
    if spec.required and not text.strip():
        raise ParameterError(spec.name, "must not be empty")
    return text


def _to_number(raw: Any, spec: _Spec, kind: str) -> float:
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ParameterError(spec.name, f"{raw!r} is not a number")
    number = int(str(raw).strip()) if kind == "int" else float(raw)
    if spec.minimum is not None and number < spec.minimum:
        raise ParameterError(spec.name, f"{number} is below the minimum {spec.minimum}")
    if spec.maximum is not None and number > spec.maximum:
        raise ParameterError(spec.name, f"{number} is above the maximum {spec.maximum}")
    return number


def _to_bool(raw: Any, spec: _Spec, kind: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ParameterError(spec.name, f"{raw!r} is not a boolean; use true or false")


def _to_date(raw: Any, spec: _Spec, kind: str) -> dt.date | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if kind == "optional_date":
            return None
        raise ParameterError(spec.name, "a date is required, as YYYY-MM-DD")
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        raise ParameterError(spec.name, f"{raw!r} is not a date; use YYYY-MM-DD, e.g. 2024-01-31") from None


def _to_identifier(raw: Any, spec: _Spec, kind: str) -> str:
    text = str(raw or "").strip()
    if not text and not spec.required:
        return ""
    if not _IDENT.match(text):
        raise ParameterError(spec.name, f"{raw!r} is not an identifier (letters, digits, underscore)")
    return text


def _to_table(raw: Any, spec: _Spec, kind: str) -> Any:
    from retail_lakehouse.core.tables import registry

    try:
        return registry().get(str(raw or ""), layer=spec.layer)
    except TableNotFoundError as exc:
        raise ParameterError(spec.name, str(exc)) from None


def _to_choice(raw: Any, spec: _Spec, kind: str) -> str:
    allowed = list(ENVIRONMENTS) if kind == "env" else list(spec.choices or [])
    text = str(raw).strip()
    if text not in allowed:
        raise ParameterError(spec.name, f"{raw!r} is not allowed; use one of {', '.join(allowed)}")
    return text


def _to_list(raw: Any, spec: _Spec, kind: str) -> list[str]:
    items = list(raw) if isinstance(raw, list | tuple) else [p.strip() for p in str(raw or "").split(",")]
    items = [str(i).strip() for i in items if str(i).strip()]
    if spec.choices is not None:
        unknown = [i for i in items if i not in spec.choices]
        if unknown:
            raise ParameterError(spec.name, f"{unknown} not allowed; use some of {', '.join(spec.choices)}")
    return items


# Parameter kind -> converter (value, options, kind) -> the typed value, or ParameterError.
_CONVERTERS: dict[str, Callable[[Any, _Spec, str], Any]] = {
    "str": _to_str,
    "int": _to_number,
    "float": _to_number,
    "bool": _to_bool,
    "date": _to_date,
    "optional_date": _to_date,
    "identifier": _to_identifier,
    "table": _to_table,
    "choice": _to_choice,
    "env": _to_choice,
    "list": _to_list,
}


def date_range(start: dt.date | None, end: dt.date | None, *, name: str = "end_date") -> None:
    """Check that a date range is ordered.

    Raises:
        ParameterError: the end is before the start.
    """
    if start and end and end < start:
        raise ParameterError(name, f"{end} is before the start {start}; swap them")


# ----------------------------------------------------------------------------- a notebook's parameters, declared once

_BY_ANNOTATION: dict[str, Kind] = {"bool": "bool", "int": "int", "float": "float", "str": "str"}
_FORM_KIND = {"identifier": "str"}  # form kinds that differ from the validation kind


@dataclass(frozen=True)
class Param:
    """How one parameter of a notebook's `parameters` cell is read, beyond its annotated type.

    Attributes:
        kind: what the value must be (see `param`); None: from the annotation (``bool``, ``int``,
            ``float``, else ``str``), and ``env`` for a parameter named env.
        choices: allowed values (``choice``, ``list``).
        layer: layer of ``table`` short names, or a function of the notebook's raw value giving it.
        minimum: lower bound of a number.
        maximum: upper bound of a number.
        required: for ``str``/``identifier``, reject an empty value.
        check: the procedure's own check of the converted value; returns the value to use and
            raises ParameterError.
        unless: another parameter: when that one has a value, this one is not read (None).
        record: how the audit row records the value (default: a table as its `layer.name`, anything
            else as it is).
    """

    kind: Kind | None = None
    choices: Sequence[str] | None = None
    layer: str | Callable[[str], str | None] | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True
    check: Callable[[Any], Any] | None = None
    unless: str | None = None
    record: Callable[[Any], Any] | None = None


class ParameterValues(Mapping[str, Any]):
    """A notebook's validated parameters, in the cell's order: `p.table` or `p["table"]`; `p.audit` to record."""

    def __init__(self, values: Mapping[str, Any], specs: Mapping[str, Param]) -> None:
        self._values = dict(values)
        self._specs = dict(specs)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"no parameter {name!r}; the notebook's parameters are {', '.join(values)}")

    def __repr__(self) -> str:
        return f"ParameterValues({self._values!r})"

    @property
    def audit(self) -> dict[str, Any]:
        """The parameters as the audit row records them (tables as `layer.name`)."""
        out = {}
        for name, value in self._values.items():
            record = self._specs[name].record if name in self._specs else None
            if record is not None and value is not None:
                out[name] = record(value)
            else:
                out[name] = value.ref if isinstance(value, TableDef) else value
        return out


class Parameters:
    """A procedure's parameters: its notebook's `parameters` cell, and what the annotations cannot say.

    Args:
        check: the procedure's check across parameters, run on the converted values (a dict, in the
            cell's order) after every parameter's own; returns the values it changes (or None).
        **params: parameter name -> `Param`, or a kind (``"date"``) for a Param of just that kind.
            Parameters left out are read by their annotation.
    """

    def __init__(
        self,
        *,
        check: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None = None,
        **params: Param | Kind,
    ) -> None:
        self.params = {name: p if isinstance(p, Param) else Param(p) for name, p in params.items()}
        self.check = check

    def declared(self, namespace: Mapping[str, Any]) -> dict[str, Param]:
        """Every parameter of the notebook's `parameters` cell (its annotated variables) with its kind.

        Args:
            namespace: the notebook's globals (`globals()`), after the parameters cell ran.

        Raises:
            ParameterError: the namespace has no annotated variable, or the spec names one it lacks.
        """
        annotations = namespace.get("__annotations__") or {}
        if not annotations:
            raise ParameterError(
                "parameters", "the notebook declares no annotated parameter: write its parameters cell as "
                'annotated assignments, e.g. `table: str = "orders"  # table to backfill`, and run it first'
            )
        unknown = [name for name in self.params if name not in annotations]
        if unknown:
            raise ParameterError(unknown[0], "is not an annotated variable of the notebook's parameters cell")
        return {name: self._spec(name, annotation) for name, annotation in annotations.items()}

    def _spec(self, name: str, annotation: Any) -> Param:
        spec = self.params.get(name, Param())
        if spec.kind is not None:
            return spec
        kind = "env" if name == "env" else _BY_ANNOTATION.get(getattr(annotation, "__name__", str(annotation)), "str")
        return dataclasses.replace(spec, kind=kind)

    def read(self, namespace: Mapping[str, Any]) -> ParameterValues:
        """Read, convert and check every parameter (a Databricks widget's value first, see `param`).

        Parameters are read in the cell's order; one with `unless` after the others.

        Raises:
            ParameterError: a value is not allowed; the message says which values are.
        """
        specs = self.declared(namespace)
        values: dict[str, Any] = {}
        for name, spec in sorted(specs.items(), key=lambda item: item[1].unless is not None):
            if spec.unless is not None and values.get(spec.unless):
                values[name] = None
                continue
            if name not in namespace:
                raise ParameterError(name, "is annotated but has no value: give it a default in the parameters cell")
            raw = namespace[name]
            layer = spec.layer(str(raw)) if callable(spec.layer) else spec.layer
            value = param(name, raw, kind=spec.kind or "str", choices=spec.choices, layer=layer,
                          minimum=spec.minimum, maximum=spec.maximum, required=spec.required)
            values[name] = spec.check(value) if spec.check is not None else value
        values = {name: values[name] for name in specs}
        if self.check is not None:
            values.update(self.check(dict(values)) or {})
        return ParameterValues(values, specs)

    def form_spec(self, namespace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The `parameter_form` spec of every parameter (kind, choices, layer)."""
        spec: dict[str, dict[str, Any]] = {}
        for name, p in self.declared(namespace).items():
            kind = p.kind or "str"
            field: dict[str, Any] = {"kind": _FORM_KIND.get(kind, kind)}
            if kind == "choice":
                field["choices"] = list(p.choices or [])
            if isinstance(p.layer, str):
                field["layer"] = p.layer
            spec[name] = field
        return spec

    def form(self, namespace: MutableMapping[str, Any]) -> ipywidgets.Widget | None:
        """The interactive form of every parameter (see `core.widgets.parameter_form`); None under papermill."""
        from retail_lakehouse.core.widgets import parameter_form

        return parameter_form(namespace, self.form_spec(namespace))
