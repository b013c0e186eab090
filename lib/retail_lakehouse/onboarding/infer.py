"""Infer a source's schema from a sample: types, the likely key, watermark and business time, ranges
and references. Everything inferred is shown for confirmation and can be overridden (`key`,
`watermark`) or edited in the files written, which are a reviewable change."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from retail_lakehouse.core.errors import ConfigError, ParameterError
from retail_lakehouse.core.tables import Registry, spark_type_to_arrow
from retail_lakehouse.onboarding.inspect import SourceSample

SUPPORTED = ("string", "bigint", "int", "smallint", "double", "float", "boolean", "date", "timestamp")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC = ("bigint", "int", "smallint", "double", "float")
_SPARK_TS = "'yyyy-MM-dd HH:mm:ss'"


@dataclass(frozen=True)
class Column:
    """One source column: its bronze type (as landed), silver type and standardizing SQL, and its role."""

    name: str
    bronze_type: str
    silver_type: str
    expression: str
    role: str  # key | watermark | time | number | reference | text | flag


@dataclass(frozen=True)
class SourceSchema:
    """What onboarding writes from: the source, its columns and the choices inferred."""

    name: str
    kind: str
    location: str
    columns: tuple[Column, ...]
    key: str
    watermark: str | None
    business_time: str | None
    date_column: str | None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    sample_rows: int = 0

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def describe(self) -> str:
        """The inferred schema as text, for confirmation before anything is written."""
        lines = [f"source {self.kind} {self.location} -> bronze.{self.name}, silver.{self.name} "
                 f"({self.sample_rows} sample rows)",
                 f"  key: {self.key}   watermark: {self.watermark or '(files by checkpoint)'}   "
                 f"business time: {self.business_time or '-'}"]
        for c in self.columns:
            extra = ""
            if c.name in self.ranges:
                lo, hi = self.ranges[c.name]
                extra = f"  range rule {lo:g}..{hi:g} (review)"
            if c.name in self.references:
                extra = f"  references {self.references[c.name]} (review)"
            lines.append(f"  {c.name:<24} {c.bronze_type:<10} -> {c.silver_type:<14} {c.role}{extra}")
        if self.date_column:
            lines.append(f"  {self.date_column:<24} {'':<10} -> {'date':<14} derived from {self.business_time}")
        return "\n".join(lines)


def _values(sample: SourceSample, col: str) -> list:
    return [r.get(col) for r in sample.rows if r.get(col) is not None]


def _is_text_of(values: list, pattern: re.Pattern[str]) -> bool:
    return bool(values) and all(isinstance(v, str) and pattern.match(v) for v in values)


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def _key(sample: SourceSample, name: str, key: str | None) -> str:
    cols = list(sample.columns)
    if key:
        if key not in cols:
            raise ParameterError("--key", f"{key!r} is not a column of the source; columns: {', '.join(cols)}")
        return key
    for candidate in (f"{_singular(name)}_id", "id"):
        if candidate in cols:
            return candidate
    for col in cols:
        values = _values(sample, col)
        if col.endswith("_id") and values and len(set(values)) >= 0.9 * len(values):
            return col
    raise ParameterError("--key", f"no likely business key among {', '.join(cols)}; name it with --key COLUMN")


def _watermark(sample: SourceSample, kinds: dict[str, str], watermark: str | None) -> str | None:
    if watermark:
        if watermark not in sample.columns:
            raise ParameterError("--watermark", f"{watermark!r} is not a column of the source")
        if kinds.get(watermark) != "timestamp":
            raise ParameterError("--watermark", f"{watermark!r} holds no timestamps; incremental reads need one")
        return watermark
    if sample.kind == "landing":
        return None  # files are ingested by checkpoint, not by a column
    stamps = [c for c, k in kinds.items() if k == "timestamp"]
    for candidate in ("updated_at", "modified_at", "last_modified", *[c for c in stamps if c.endswith("_at")], *stamps):
        if candidate in stamps:
            return candidate
    raise ParameterError(
        "--watermark", "no timestamp column to read new rows by (e.g. updated_at); name one with --watermark COLUMN"
    )


def _range(values: list) -> tuple[float, float]:
    """A starter range from the sample: from 0 unless negatives are common (> 5%), to 10x the largest."""
    lo, hi = min(values), max(values)
    negatives = sum(1 for v in values if v < 0)
    low = 0.0 if negatives <= 0.05 * len(values) else float(math.floor(lo))
    return low, float(math.ceil(max(hi, 1) * 10))


def _standard(col: str, typ: str, kind: str, values: list) -> tuple[str, str]:
    """(silver type, SQL over the bronze column) of one column."""
    if kind == "timestamp" and typ == "string":
        return "timestamp", f"try_to_timestamp({col}, {_SPARK_TS})"
    if kind == "date" and typ == "string":
        return "date", f"to_date(try_to_timestamp({col}, 'yyyy-MM-dd'))"
    if typ in ("double", "float") and all(abs(v) < 1e10 and round(v, 2) == v for v in values):
        return "decimal(12,2)", f"cast({col} AS decimal(12,2))"
    if typ == "string":
        return "string", f"trim({col})"
    return typ, col


def _override(col: str, typ: str, silver: str) -> tuple[str, str]:
    """(silver type, SQL) for a type the engineer chose (`--type COL=TYPE`)."""
    silver = silver.strip().lower()
    spark_type_to_arrow(silver)  # ConfigError for a type the registry does not take
    if silver == "timestamp" and typ == "string":
        return silver, f"try_to_timestamp({col}, {_SPARK_TS})"
    if silver == "date" and typ == "string":
        return silver, f"to_date(try_to_timestamp({col}, 'yyyy-MM-dd'))"
    return silver, col if silver == typ else f"cast({col} AS {silver})"


def infer(
    sample: SourceSample,
    name: str,
    registry: Registry,
    *,
    key: str | None = None,
    watermark: str | None = None,
    types: dict[str, str] | None = None,
) -> SourceSchema:
    """The schema onboarding writes for `name`, from a sample of its source.

    Raises:
        ConfigError: a column of a type onboarding does not support (nested values, binary), or a
            `types` override naming a type the registry does not take.
        ParameterError: no key or watermark can be found, or an override names no (suitable) column.
    """
    if not sample.rows:
        raise ParameterError(name, "the source has no rows yet: nothing to infer types, key or watermark from")
    bad = {c: t for c, t in sample.columns.items() if t not in SUPPORTED and not t.startswith("decimal(")}
    if bad:
        listed = ", ".join(f"{c} ({t})" for c, t in bad.items())
        raise ConfigError(f"source column(s) of unsupported type: {listed}; supported: {', '.join(SUPPORTED)}, "
                          "decimal(p,s). Expose them as text in a view of the source, then onboard the view")
    kinds: dict[str, str] = {}
    for col, typ in sample.columns.items():
        values = _values(sample, col)
        if typ == "string" and _is_text_of(values, _TS):
            kinds[col] = "timestamp"
        elif typ == "string" and _is_text_of(values, _DATE):
            kinds[col] = "date"
        else:
            kinds[col] = typ
    unknown = sorted(set(types or {}) - set(sample.columns))
    if unknown:
        raise ParameterError("--type", f"{', '.join(unknown)}: not a column of the source; columns: {', '.join(sample.columns)}")
    key_col = _key(sample, name, key)
    wm = _watermark(sample, kinds, watermark)
    stamps = [c for c, k in kinds.items() if k == "timestamp"]
    business = next((c for c in stamps if c not in (wm, "created_at")), wm)
    references = {}
    for col in sample.columns:
        if col != key_col and col.endswith("_id"):
            for t in registry.in_layer("silver"):
                if t.keys == (col,) and t.name != name and not t.name.endswith("_quarantine"):
                    references[col] = f"silver.{t.name}.{col}"
    columns, ranges = [], {}
    for col, typ in sample.columns.items():
        kind, values = kinds[col], _values(sample, col)
        role = ("key" if col == key_col else "watermark" if col == wm else "reference" if col in references
                else "time" if kind in ("timestamp", "date") else "number" if typ in _NUMERIC
                else "flag" if typ == "boolean" else "text")
        if role == "number" and values:
            ranges[col] = _range(values)
        standard = _override(col, typ, (types or {})[col]) if col in (types or {}) else _standard(col, typ, kind, values)
        columns.append(Column(col, typ, *standard, role))
    date_column = None
    if business:
        stem = re.sub(r"(_ts|_at|_time|_timestamp)$", "", business)
        candidate = f"{stem}_date" if stem != business else f"{business}_date"
        date_column = candidate if candidate not in sample.columns else None
    return SourceSchema(
        name=name, kind=sample.kind, location=sample.location, columns=tuple(columns), key=key_col,
        watermark=wm, business_time=business, date_column=date_column, ranges=ranges, references=references,
        sample_rows=len(sample.rows),
    )  # fmt: skip
