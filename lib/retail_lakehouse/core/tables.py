"""The table registry: names, layers, schemas, keys, partitioning and properties of every table."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from retail_lakehouse.core.config import LAYERS, Settings, load_settings, load_yaml
from retail_lakehouse.core.errors import ConfigError, TableNotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

CDF_PROPERTY = "delta.enableChangeDataFeed"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Sla:
    """A table's freshness SLA, judged in business time (see `retail_lakehouse.pipeline.quality`).

    Attributes:
        hours: the most the table's newest business time may lag its upstream's (or the run's business date).
        time: SQL expression of a row's business time, e.g. ``order_ts``.
        upstream: ``layer.table`` the table is built from.
        upstream_time: SQL expression of the upstream's business time.
    """

    hours: float
    time: str
    upstream: str
    upstream_time: str


@dataclass(frozen=True)
class VolumeBounds:
    """Bounds on a day's rows relative to the median of the trailing days.

    Attributes:
        date: SQL expression of a row's business date.
        warn: (low, high) ratios of the median outside which the check warns.
        fail: (low, high) ratios outside which it fails.
        days: trailing days compared with.
        min_history: fewer trailing days with rows than this: nothing to compare with (passes).
    """

    date: str
    warn: tuple[float, float] = (0.5, 2.0)
    fail: tuple[float, float] = (0.2, 5.0)
    days: int = 7
    min_history: int = 2


@dataclass(frozen=True)
class TableDef:
    """A registered table.

    Attributes:
        name: short name, e.g. ``orders``.
        layer: ``bronze``, ``silver``, ``gold`` or ``monitoring``.
        columns: column name -> Spark SQL type, in order.
        keys: business key columns.
        partition_by: Delta partition columns.
        properties: Delta table properties set at creation.
        description: one line for humans.
        expect_rows: the table must never be empty (quality fails it when it is); default per layer.
        sla: how fresh the data must be (`Sla`), or None.
        volume: the daily-volume bounds (`VolumeBounds`), or None.
        source_system: for a bronze table, the system it is ingested from (``store_oltp`` through JDBC,
            ``pos`` from landing files); empty otherwise.
        watermark: for a bronze table of a JDBC source, the source column incremental ingestion reads
            by (rows changed after the last value seen); empty otherwise.
        change_data_feed: the table declares Delta Change Data Feed. On Databricks targets it is
            created with ``delta.enableChangeDataFeed = true`` (`create_properties`) and silver reads its
            new rows from the change feed; locally it is not enabled (Sail cannot write such tables:
            the engine refuses them with UnsupportedLocallyError) and silver reads by watermark.
        source_path: for a bronze table of landing files (``source_system: landing``), their folder
            (relative: under LAKEHOUSE_HOME); empty otherwise.
    """

    name: str
    layer: str
    columns: dict[str, str]
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    description: str = ""
    expect_rows: bool = False
    sla: Sla | None = None
    volume: VolumeBounds | None = None
    source_system: str = ""
    watermark: str = ""
    change_data_feed: bool = False
    source_path: str = ""

    def create_properties(self, *, local: bool) -> dict[str, str]:
        """The Delta properties a CREATE TABLE sets: `properties`, plus ``delta.enableChangeDataFeed =
        true`` for a table declaring `change_data_feed` on a Databricks target (never locally)."""
        if self.change_data_feed and not local:
            return {**self.properties, CDF_PROPERTY: "true"}
        return dict(self.properties)

    @property
    def ref(self) -> str:
        """`layer.name`, unique in the registry."""
        return f"{self.layer}.{self.name}"

    def full_name(self, settings: Settings | None = None) -> str:
        """Three-part name in an environment."""
        settings = settings or load_settings()
        return settings.qualified(self.layer, self.name)

    def ddl(self) -> str:
        """Column list as Spark DDL: ``a bigint, b string``."""
        return ", ".join(f"`{c}` {t}" for c, t in self.columns.items())

    def arrow_schema(self) -> pa.Schema:
        """The schema as a pyarrow schema (for delta-rs)."""
        import pyarrow as pa

        return pa.schema([pa.field(c, spark_type_to_arrow(t)) for c, t in self.columns.items()])


_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


def spark_type_to_arrow(spark_type: str) -> pa.DataType:
    """Arrow type of a Spark SQL type name used in the registry."""
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "bigint": pa.int64(),
        "int": pa.int32(),
        "integer": pa.int32(),
        "smallint": pa.int16(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "timestamp_ntz": pa.timestamp("us"),
        "binary": pa.binary(),
    }
    t = spark_type.strip().lower()
    if t in simple:
        return simple[t]
    m = _DECIMAL.match(t)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    raise ConfigError(f"type {spark_type!r} in schema_definitions.yaml is not supported; use one of {sorted(simple)}")


class Registry:
    """All registered tables, looked up by short name, `layer.name` or full name."""

    def __init__(self, tables: list[TableDef]) -> None:
        self._by_ref: dict[str, TableDef] = {}
        for t in tables:
            if t.ref in self._by_ref:
                raise ConfigError(f"table {t.ref} is defined twice in schema_definitions.yaml")
            self._by_ref[t.ref] = t

    def __iter__(self):
        return iter(self._by_ref.values())

    def __len__(self) -> int:
        return len(self._by_ref)

    def in_layer(self, layer: str) -> list[TableDef]:
        return [t for t in self if t.layer == layer]

    def get(self, name: str, layer: str | None = None, settings: Settings | None = None) -> TableDef:
        """Resolve a table name.

        Accepts ``orders`` (with `layer`, or when the short name is unique), ``silver.orders``,
        ``local_silver.orders`` or ``retail_datalake.local_silver.orders``.

        Raises:
            TableNotFoundError: unknown or ambiguous name; the message lists candidates.
        """
        settings = settings or load_settings()
        parts = name.strip().strip("`").split(".")
        if not all(_IDENT.match(p) for p in parts) or not 1 <= len(parts) <= 3:
            raise TableNotFoundError(name, f"{name!r} is not a table name; use e.g. 'orders' or 'silver.orders'")
        if len(parts) == 3:
            if parts[0] != settings.catalog:
                raise TableNotFoundError(
                    name, f"catalog {parts[0]!r} is not this environment's catalog {settings.catalog!r}"
                )
            parts = parts[1:]
        if len(parts) == 2:
            layer_or_schema, short = parts
            by_schema = {v: k for k, v in settings.schemas.items()}
            found_layer = layer_or_schema if layer_or_schema in LAYERS else by_schema.get(layer_or_schema)
            if found_layer is None:
                raise TableNotFoundError(
                    name,
                    f"schema {layer_or_schema!r} is not one of env {settings.env!r}: "
                    f"{', '.join(settings.schemas.values())}",
                )
            if layer and layer != found_layer:
                raise TableNotFoundError(name, f"{name!r} is in layer {found_layer!r}, not {layer!r}")
            layer, parts = found_layer, [short]
        short = parts[0]
        candidates = [t for t in self if t.name == short and (layer is None or t.layer == layer)]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            known = sorted({t.name for t in self if layer is None or t.layer == layer})
            where = f" in layer {layer!r}" if layer else ""
            raise TableNotFoundError(name, f"unknown table {name!r}{where}; known tables: {', '.join(known)}")
        layers = ", ".join(f"{t.layer}.{t.name}" for t in candidates)
        raise TableNotFoundError(name, f"table name {name!r} is ambiguous; say which one: {layers}")


def _pair(value: object, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(isinstance(v, int | float) for v in value):
        raise ConfigError(f"volume bounds must be [low, high] ratios, not {value!r}")
    return float(value[0]), float(value[1])


def _quality(entry: dict, layer_quality: dict, where: str, problems: list[str]) -> dict:
    """The quality declarations of a table: expect_rows, sla, volume (layer defaults, then the table's)."""
    raw = {**(layer_quality or {}), **(entry.get("quality") or {})}
    unknown = set(raw) - {"expect_rows", "sla", "volume"}
    if unknown:
        problems.append(f"{where}: unknown quality key(s) {sorted(unknown)} (known: expect_rows, sla, volume)")
    out: dict = {"expect_rows": bool(raw.get("expect_rows", False))}
    try:
        if raw.get("sla"):
            sla = raw["sla"]
            out["sla"] = Sla(float(sla["hours"]), str(sla["time"]), str(sla["upstream"]), str(sla["upstream_time"]))
        if raw.get("volume"):
            vol = raw["volume"]
            out["volume"] = VolumeBounds(
                date=str(vol["date"]),
                warn=_pair(vol.get("warn"), VolumeBounds.warn),
                fail=_pair(vol.get("fail"), VolumeBounds.fail),
                days=int(vol.get("days", VolumeBounds.days)),
                min_history=int(vol.get("min_history", VolumeBounds.min_history)),
            )
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        problems.append(
            f"{where}: quality: {exc} (sla needs hours, time, upstream, upstream_time; volume needs date)"
        )
    return out


def _parse(raw: dict) -> list[TableDef]:
    defaults = (raw.get("defaults") or {}).get("properties") or {}
    layer_quality = raw.get("layer_quality") or {}
    layer_props = raw.get("layer_properties") or {}
    tables: list[TableDef] = []
    problems: list[str] = []
    for i, entry in enumerate(raw.get("tables") or []):
        name, layer = entry.get("name"), entry.get("layer")
        where = f"tables[{i}] ({name})"
        if not name or not _IDENT.match(str(name)):
            problems.append(f"{where}: missing or invalid name")
            continue
        if layer not in LAYERS:
            problems.append(f"{where}: layer must be one of {', '.join(LAYERS)}")
            continue
        columns = {str(k): str(v) for k, v in (entry.get("columns") or {}).items()}
        watermark = str(entry.get("watermark") or "")
        for col in [*entry.get("keys", []), *entry.get("partition_by", []), *([watermark] if watermark else [])]:
            if col not in columns:
                problems.append(f"{where}: key/partition/watermark column {col!r} is not a column")
        for col, typ in columns.items():
            try:
                spark_type_to_arrow(typ)
            except ConfigError as exc:
                problems.append(f"{where}.{col}: {exc}")
        props = {**defaults, **(layer_props.get(layer) or {}), **(entry.get("properties") or {})}
        tables.append(
            TableDef(
                name=str(name),
                layer=str(layer),
                columns=columns,
                keys=tuple(entry.get("keys") or ()),
                partition_by=tuple(entry.get("partition_by") or ()),
                properties={str(k): str(v) for k, v in props.items()},
                description=str(entry.get("description") or ""),
                source_system=str(entry.get("source_system") or ""),
                watermark=watermark,
                change_data_feed=bool(entry.get("change_data_feed", False)),
                source_path=str(entry.get("source_path") or ""),
                **_quality(entry, layer_quality.get(layer), where, problems),
            )
        )
    if problems:
        raise ConfigError("schema_definitions.yaml has problems:\n  " + "\n  ".join(problems))
    return tables


def quarantine_def(silver: TableDef, bronze: TableDef) -> TableDef:
    """`<table>_quarantine` in silver: the bronze row as landed, plus why and when it was rejected."""
    columns = dict(bronze.columns)
    columns.update({"_failed_rules": "string", "_quarantined_at": "timestamp", "_quarantine_run_id": "string"})
    return TableDef(
        name=f"{silver.name}_quarantine",
        layer="silver",
        columns=columns,
        keys=bronze.keys,
        properties=dict(silver.properties),
        description=f"Rows of bronze.{bronze.name} rejected by an error rule of silver.{silver.name}.",
    )


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The registry from the packaged `schema_definitions.yaml` (quarantine tables derived)."""
    return load_registry(resources.files("retail_lakehouse.core").joinpath("schema_definitions.yaml").read_text())


def load_registry(text: str) -> Registry:
    """A registry from the text of a `schema_definitions.yaml` (e.g. another checkout's), quarantine
    tables derived.

    Raises:
        ConfigError: every problem of the document, at once.
    """
    tables = _parse(load_yaml(text))
    by_ref = {t.ref: t for t in tables}
    derived = []
    for t in tables:
        if t.layer != "silver":
            continue
        source = "pos_events" if t.name == "pos_transactions" else t.name
        bronze = by_ref.get(f"bronze.{source}")
        if bronze:
            derived.append(quarantine_def(t, bronze))
    return Registry(tables + derived)


def full_name(ref: str, env: str | Settings | None = None) -> str:
    """The three-part name of a registry table in an environment (`silver.orders` ->
    `retail_datalake.prod_silver.orders`); `env` is a name or loaded settings."""
    settings = env if isinstance(env, Settings) else load_settings(env)
    return registry().get(ref, settings=settings).full_name(settings)

