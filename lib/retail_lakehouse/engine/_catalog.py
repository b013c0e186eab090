"""Tables on disk and the session catalog: where a local table lives, its full name, and which tables
a session has registered (all at once, or lazily when a request first names one).

Re-exported by `retail_lakehouse.engine`; import from there.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import LAYERS, Settings, load_settings
from retail_lakehouse.core.errors import TableNotFoundError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_registered: dict[int, tuple[set[str], set[str]]] = {}  # per session: schemas and tables registered

def table_dir(full_name: str, settings: Settings | None = None) -> Path:
    """Directory of a local table: `<warehouse>/<catalog>/<schema>/<table>`."""
    settings = settings or load_settings("local")
    parts = full_name.split(".")
    if len(parts) == 2:
        parts = [settings.catalog, *parts]
    if len(parts) != 3:
        raise TableNotFoundError(full_name, f"{full_name!r} is not a table name; use catalog.schema.table")
    return settings.warehouse.joinpath(*parts)


def qualify(name: str, settings: Settings | None = None) -> str:
    """Full three-part name for a name as written in SQL (short names resolve through the registry)."""
    from retail_lakehouse.core.tables import registry

    settings = settings or load_settings()
    parts = name.replace("`", "").split(".")
    if len(parts) == 3:
        return ".".join(parts)
    if len(parts) == 2 and parts[0] in settings.schemas.values():
        return f"{settings.catalog}.{parts[0]}.{parts[1]}"
    return registry().get(name, settings=settings).full_name(settings)


def resolve_table(name: str, settings: Settings | None = None) -> Path:
    """Directory of an existing local Delta table named as in SQL.

    Raises:
        TableNotFoundError: the name is unknown or the table has no data yet.
    """
    settings = settings or load_settings("local")
    full = qualify(name, settings)
    path = table_dir(full, settings)
    if not (path / "_delta_log").is_dir():
        raise TableNotFoundError(
            name, f"table {full} does not exist yet (no Delta log at {path}); run the job that creates it"
        )
    return path


def local_tables(settings: Settings | None = None) -> dict[str, Path]:
    """Every Delta table under the local warehouse: full name -> directory."""
    settings = settings or load_settings("local")
    found: dict[str, Path] = {}
    root = settings.warehouse
    if not root.is_dir():
        return found
    for log in sorted(root.glob("*/*/*/_delta_log")):
        table = log.parent
        catalog, schema = table.parent.parent.name, table.parent.name
        found[f"{catalog}.{schema}.{table.name}"] = table
    return found


def register_tables(spark: SparkSession, settings: Settings | None = None) -> int:
    """Register every local table and each layer's schema in the session's catalog; returns the count."""
    settings = settings or load_settings("local")
    schemas = {settings.schema(layer) for layer in LAYERS}
    tables = local_tables(settings)
    schemas |= {name.split(".")[1] for name in tables if name.startswith(settings.catalog + ".")}
    for schema in sorted(schemas):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {settings.catalog}.{schema}")
    for name, path in tables.items():
        if name.startswith(settings.catalog + "."):
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING delta LOCATION '{sql_string(str(path))}'")
    _registered[id(spark)] = (schemas, set(tables))
    return len(tables)


_CATALOG_LISTINGS = {"list_tables", "list_databases", "list_catalogs", "list_functions"}
_SQL_LISTINGS = re.compile(rb"(?i)\bSHOW\s+(TABLES|VIEWS|SCHEMAS|DATABASES|TABLE\s+EXTENDED)\b|information_schema")
_lazy: set[int] = set()  # sessions that register tables on first mention


def register_lazily(spark: SparkSession, settings: Settings | None = None) -> None:
    """Register tables in this session when a request first names them, not all up front.

    A task kernel names a handful of the warehouse's tables; registering all of them costs one
    round trip each (30+ per kernel, most of a daily increment's). Before each request is sent, the
    three-part names of this catalog it holds (SQL text, table reads, catalog calls, in the request
    as serialized) that are on disk and not yet registered are registered first. A request that
    lists tables (SHOW TABLES, information_schema, catalog listings) registers them all first, so
    listings see the whole warehouse as with eager registration.
    """
    settings = settings or load_settings("local")
    names_in = re.compile(rb"`?" + re.escape(settings.catalog.encode()) + rb"`?\.`?(\w+)`?\.`?(\w+)`?")
    client = spark.client
    busy = threading.local()
    _registered.setdefault(id(spark), (set(), set()))
    _lazy.add(id(spark))

    def ensure(blob: bytes, listing: bool) -> None:
        if getattr(busy, "on", False):
            return
        busy.on = True
        try:
            if listing or _SQL_LISTINGS.search(blob):
                register_tables(spark, settings)
                return
            schemas, names = _registered.setdefault(id(spark), (set(), set()))
            wanted = {f"{settings.catalog}.{a.decode()}.{b.decode()}" for a, b in names_in.findall(blob)}
            for name in sorted(wanted - names):
                path = table_dir(name, settings)
                if not (path / "_delta_log").is_dir():
                    continue  # not a table (yet): the request itself says what it means
                schema = name.split(".")[1]
                if schema not in schemas:
                    spark.sql(f"CREATE DATABASE IF NOT EXISTS {settings.catalog}.{schema}")
                    schemas.add(schema)
                spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING delta LOCATION '{sql_string(str(path))}'")
                names.add(name)
        finally:
            busy.on = False

    def listing(req: Any) -> bool:
        try:
            root = req.plan.root
            return root.HasField("catalog") and root.catalog.WhichOneof("cat_type") in _CATALOG_LISTINGS
        except (AttributeError, ValueError):
            return False

    execute_iter, execute, analyze = client._execute_and_fetch_as_iterator, client._execute, client._analyze

    def _execute_and_fetch_as_iterator(req: Any, *args: Any, **kwargs: Any) -> Any:
        ensure(req.SerializeToString(), listing(req))
        return execute_iter(req, *args, **kwargs)

    def _execute(req: Any, *args: Any, **kwargs: Any) -> Any:
        ensure(req.SerializeToString(), listing(req))
        return execute(req, *args, **kwargs)

    def _analyze(method: str, **kwargs: Any) -> Any:
        ensure(b"".join(v.SerializeToString() for v in kwargs.values() if hasattr(v, "SerializeToString")), False)
        return analyze(method, **kwargs)

    client._execute_and_fetch_as_iterator = _execute_and_fetch_as_iterator  # type: ignore[method-assign]
    client._execute = _execute  # type: ignore[method-assign]
    client._analyze = _analyze  # type: ignore[method-assign]


def is_registered(spark: SparkSession, full_name: str) -> bool:
    """True when `full_name` is registered in this session's catalog (per session: Sail's catalog is)."""
    entry = _registered.get(id(spark))
    return entry is not None and full_name in entry[1]


def mark_registered(spark: SparkSession, full_name: str, *, registered: bool = True) -> None:
    """Record that `full_name` was registered in (or dropped from) this session's catalog."""
    schemas, names = _registered.setdefault(id(spark), (set(), set()))
    if registered:
        names.add(full_name)
        schemas.add(full_name.split(".")[1])
    else:
        names.discard(full_name)


def sql_string(value: str) -> str:
    """`value` escaped for a single-quoted Spark SQL string literal (backslashes and quotes)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
