"""The engine: a Spark Connect session per environment and Databricks SQL on it.

Locally (env `local`) the session is served by Sail, embedded in this process or reached through
`SPARK_REMOTE`; Delta utility statements Sail cannot parse (DESCRIBE HISTORY, OPTIMIZE, VACUUM,
RESTORE, ...) are served by delta-rs in Databricks' syntax; Change Data Feed is refused before
anything changes (Sail cannot write to CDF tables) and CACHE/UNCACHE TABLE are documented no-ops.
On Databricks the runtime's own session is used and every statement goes to Spark.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import Settings, load_settings
from retail_lakehouse.core.errors import ConfigError, SqlError, TableNotFoundError, UnsupportedLocallyError
from retail_lakehouse.engine import _client
from retail_lakehouse.engine._catalog import (
    _lazy,
    _registered,
    local_tables,
    mark_registered,
    qualify,
    register_lazily,
    register_tables,
    resolve_table,
    sql_string,
    table_dir,
)
from retail_lakehouse.engine._catalog import (
    is_registered as is_registered,
)
from retail_lakehouse.engine._sail_discovery import cache_data_source_discovery

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

_lock = threading.RLock()
_server: Any = None
_server_url: str | None = None
_sessions: dict[tuple[str, str, str], SparkSession] = {}
_options = {"retention_check": True}
_checkpoint_dirs: list[Path] = []

_RETENTION_CHECK_KEY = "spark.databricks.delta.retentionDurationCheck.enabled"


# ----------------------------------------------------------------------------- server and sessions


def _spark_home() -> None:
    """pyspark's connect client looks for SPARK_HOME when run from `python -c`; point it at the package."""
    if "SPARK_HOME" not in os.environ:
        import importlib.util

        spec = importlib.util.find_spec("pyspark")
        if spec and spec.origin:
            os.environ["SPARK_HOME"] = str(Path(spec.origin).parent)


_spark_home()


class _RpcErrorsAtDebug(logging.Filter):
    """Turns pyspark's 'GRPC Error received' ERROR record into a DEBUG line on this module's logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not str(record.msg).startswith("GRPC Error received"):
            return True
        error = record.exc_info[1] if record.exc_info else None
        details = getattr(error, "details", None)
        log.debug("Spark Connect RPC failed (raised to the caller): %s", details() if callable(details) else error)
        return False


def quiet_rpc_errors() -> None:
    """Log failed Spark Connect RPCs at DEBUG instead of as pyspark JSON ERROR records (idempotent).

    pyspark's connect client logs every failed RPC at ERROR right before raising it; once ipykernel's
    logging setup re-enables that logger, expected and handled failures (the `_metadata` fallback of
    ops diagnostics, a retried MERGE conflict) fill the terminal. The exception still reaches the
    caller, so nothing is lost. With `SPARK_CONNECT_LOG_LEVEL` set, pyspark's own logging is left alone.
    """
    if "SPARK_CONNECT_LOG_LEVEL" in os.environ:
        return
    try:
        from pyspark.sql.connect.logging import logger
    except ImportError:  # a pyspark without the connect client logs no RPC errors
        return
    if not any(isinstance(f, _RpcErrorsAtDebug) for f in logger.filters):
        logger.addFilter(_RpcErrorsAtDebug())


_RPC_METHODS = {"_execute_and_fetch_as_iterator": "execute", "_execute": "execute", "_analyze": "analyze", "config": "config"}


def log_rpcs(path: str | os.PathLike[str]) -> None:
    """Append one line per Spark Connect round trip of this process to `path`: `<pid> <kind>`
    (execute, analyze or config). For benchmarks: `LAKEHOUSE_RPC_LOG=<file>` turns it on in every
    process that opens a session (the runner and its kernels). Idempotent."""
    from pyspark.sql.connect.client.core import SparkConnectClient

    if getattr(SparkConnectClient, "_lakehouse_rpc_log", None) == str(path):
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def counted(method: Any, kind: str) -> Any:
        original = getattr(method, "__wrapped__", method)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            os.write(fd, f"{os.getpid()} {kind}\n".encode())  # one write: whole lines, any process
            return original(self, *args, **kwargs)

        call.__wrapped__ = original  # type: ignore[attr-defined]
        return call

    for name, kind in _RPC_METHODS.items():
        if hasattr(SparkConnectClient, name):
            setattr(SparkConnectClient, name, counted(getattr(SparkConnectClient, name), kind))
    SparkConnectClient._lakehouse_rpc_log = str(path)  # type: ignore[attr-defined]


def _sail_env(settings: Settings) -> None:
    """Catalog configuration Sail reads at server start: one memory catalog named like Unity's."""
    os.environ.setdefault(
        "SAIL_CATALOG__LIST", f'[{{name="{settings.catalog}", type="memory", initial_database=["default"]}}]'
    )
    os.environ.setdefault("SAIL_CATALOG__DEFAULT_CATALOG", settings.catalog)
    # Sail's own log: warnings, less the expected ones the engine handles itself (a Delta commit
    # that raced another and is retried; tasks aborted when the session stops).
    os.environ.setdefault("RUST_LOG", "warn,sail_delta_lake::transaction=off,sail_common::actor=error")
    # DataFrame.localCheckpoint() materializes intermediate results on the server (silver uses it).
    checkpoints = settings.home / "spark_checkpoints" / str(os.getpid())
    checkpoints.mkdir(parents=True, exist_ok=True)
    os.environ["SAIL_EXECUTION__CHECKPOINT__PATH"] = checkpoints.as_uri()
    _checkpoint_dirs.append(checkpoints)


def start_local_server(settings: Settings | None = None) -> str:
    """Start the embedded Sail server once per process and return its `sc://` URL.

    The URL is also exported as `SPARK_REMOTE`, so notebooks run by papermill from this process
    share the same engine instead of starting one each.
    """
    global _server, _server_url
    settings = settings or load_settings("local")
    with _lock:
        if _server_url is None:
            _sail_env(settings)
            cache_data_source_discovery()
            from pysail.spark import SparkConnectServer

            server = SparkConnectServer("127.0.0.1", 0)
            server.start(background=True)
            atexit.register(stop_local_server)
            host, port = server.listening_address
            _server, _server_url = server, f"sc://{host}:{port}"
        os.environ["SPARK_REMOTE"] = _server_url
        return _server_url


def stop_local_server() -> None:
    """Stop the embedded server if this process started it (sessions on it become unusable)."""
    global _server, _server_url
    with _lock:
        for session in _sessions.values():
            with contextlib.suppress(Exception):  # a session of a dead server cannot be closed
                session.stop()
        if _server is not None:
            _close_clients_of(_server_url)
            _server.stop()
        while _checkpoint_dirs:
            shutil.rmtree(_checkpoint_dirs.pop(), ignore_errors=True)
            if os.environ.get("SPARK_REMOTE") == _server_url:
                del os.environ["SPARK_REMOTE"]
        _server, _server_url = None, None
        _sessions.clear()
        _registered.clear()


def _close_clients_of(url: str | None) -> None:
    """Close every Spark Connect client of this process still open on `url`.

    pyspark sends a cleanup request from each open client at interpreter exit; once the server is
    stopped that request retries for about ten minutes, so a session a notebook or test opened
    itself (not through `get_spark`) would hold the process at exit.
    """
    if url is None:
        return
    import gc
    from urllib.parse import urlparse

    from pyspark.sql.connect.client.core import SparkConnectClient

    netloc = urlparse(url).netloc
    for obj in gc.get_objects():
        if isinstance(obj, SparkConnectClient) and not obj.is_closed:
            target = getattr(obj._builder, "url", None)  # noqa: SLF001 - the URL is only on the builder
            if target is not None and target.netloc == netloc:
                with contextlib.suppress(Exception):
                    obj.close()


def get_spark(env: str | None = None, *, lazy_tables: bool = False) -> SparkSession:
    """A Spark session for the environment (cached per environment and server).

    Locally: connects to `SPARK_REMOTE` if set, else starts the embedded Sail server; every Delta
    table under the local warehouse is registered by its three-part name (with `lazy_tables`, when
    a request first names it instead: see `register_lazily`; for the session this call creates). On
    Databricks: the runtime's active session (or Databricks Connect when installed).

    Raises:
        ConfigError: a Databricks environment without a Databricks runtime or Databricks Connect.
    """
    settings = load_settings(env)
    quiet_rpc_errors()
    if not settings.is_local:
        return _databricks_session(settings)
    remote = os.environ.get("SPARK_REMOTE") or start_local_server(settings)
    # One session per warehouse too: a session's catalog maps names to one warehouse's folders.
    key = (settings.env, remote, str(settings.warehouse))
    with _lock:
        spark = _sessions.get(key)
        if spark is not None:
            return spark
        from pyspark.sql import SparkSession

        if os.environ.get("LAKEHOUSE_RPC_LOG"):
            log_rpcs(os.environ["LAKEHOUSE_RPC_LOG"])
        # Both settings in the session's first request (one round trip; create() sends its options).
        builder = SparkSession.builder.remote(remote).config("spark.sql.session.timeZone", "UTC")
        spark = builder.config("spark.sql.warehouse.dir", str(settings.warehouse / "_managed")).create()
        _client.tune(spark)  # no reattachable execution; pyspark's own config reads answered once
        if lazy_tables:
            register_lazily(spark, settings)
        else:
            register_tables(spark, settings)
        _sessions[key] = spark
        return spark


def _databricks_session(settings: Settings) -> SparkSession:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    try:
        from databricks.connect import DatabricksSession  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            f"env {settings.env!r} needs a Databricks runtime: run this as a Databricks job, or install "
            "databricks-connect and configure a profile; ops notebooks talk to Databricks through "
            "retail_lakehouse.databricks.workspace instead"
        ) from None
    profile = settings.databricks.get("profile")
    builder = DatabricksSession.builder
    return (builder.profile(profile) if profile else builder).getOrCreate()


# ----------------------------------------------------------------------------- tables on disk
# (in _catalog: table_dir, qualify, resolve_table, local_tables, register_tables, register_lazily,
# is_registered, mark_registered, sql_string)


def refresh_tables(env: str | None = None) -> int:
    """Sync the open session's catalog with the warehouse: register the tables created since it
    was opened, forget those deleted; returns how many were registered.

    A warm kernel opens its session before its notebook is due (see `retail_lakehouse.jobs.kernels`):
    tables that upstream tasks created meanwhile are registered here, the others are left as they
    are (Sail reads a Delta table's latest snapshot at each query).
    """
    settings = load_settings(env)
    remote = os.environ.get("SPARK_REMOTE")
    with _lock:
        spark = _sessions.get((settings.env, remote, str(settings.warehouse)))
    if spark is None:
        return 0
    schemas, names = _registered.get(id(spark), (set(), set()))
    current = {n: p for n, p in local_tables(settings).items() if n.startswith(settings.catalog + ".")}
    for name in sorted(names - set(current)):  # deleted meanwhile: unknown here too, as on Databricks
        spark.sql(f"DROP TABLE IF EXISTS {name}")
        names.discard(name)
    if id(spark) in _lazy:  # registered when first named
        return 0
    new = {n: p for n, p in current.items() if n not in names}
    for schema in sorted({n.split(".")[1] for n in new} - schemas):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {settings.catalog}.{schema}")
        schemas.add(schema)
    for name, path in new.items():
        spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING delta LOCATION '{sql_string(str(path))}'")
        names.add(name)
    _registered[id(spark)] = (schemas, names)
    return len(new)


# ----------------------------------------------------------------------------- SQL


_CREATE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[`\w.]+)", re.IGNORECASE
)
_DROP = re.compile(r"^\s*DROP\s+TABLE\s+(?P<ifexists>IF\s+EXISTS\s+)?(?P<name>[`\w.]+)\s*;?\s*$", re.IGNORECASE)
_SET_RETENTION = re.compile(
    rf"^\s*SET\s+{re.escape(_RETENTION_CHECK_KEY)}\s*=\s*(?P<value>true|false)\s*;?\s*$", re.IGNORECASE
)
_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+(?P<name>IDENTIFIER\(:\w+\)|[`\w.]+)\s+ADD\s+COLUMN", re.IGNORECASE)
_SET_CDF_DEFAULT = re.compile(
    r"^\s*SET\s+`?spark\.databricks\.delta\.properties\.defaults\.enableChangeDataFeed`?\s*=\s*"
    r"(?P<q>['\"]?)(?P<value>[^'\";\s]*)(?P=q)\s*;?\s*$",
    re.IGNORECASE,
)
_CACHE = re.compile(
    r"^\s*(?P<verb>CACHE(?:\s+LAZY)?|UNCACHE)\s+TABLE\s+(?P<ifexists>IF\s+EXISTS\s+)?(?P<name>[`\w.]+)"
    r"(?:\s+OPTIONS\s*\((?:[^()'\"]|'[^']*'|\"[^\"]*\")*\))?(?:\s+(?:AS\s+)?(?P<query>\S.*?))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CLEAR_CACHE = re.compile(r"^\s*CLEAR\s+CACHE\s*;?\s*$", re.IGNORECASE)
_USING = re.compile(r"\bUSING\s+(?P<fmt>\w+)", re.IGNORECASE)


def sql(statement: str, args: Mapping[str, Any] | None = None, *, env: str | None = None) -> DataFrame:
    """Run one Databricks SQL statement and return its result as a Spark DataFrame.

    Args:
        statement: Databricks SQL; named parameters as `:name` and `IDENTIFIER(:name)`.
        args: values of the named parameters.
        env: environment (default `LAKEHOUSE_ENV` or `local`).

    Raises:
        SqlError: the statement is malformed or failed; the message quotes it.
        TableNotFoundError: a table it names does not exist.
    """
    settings = load_settings(env)
    spark = get_spark(settings.env)
    if not settings.is_local:
        return spark.sql(statement, args=dict(args) if args else None)
    if not statement or not statement.strip():
        raise SqlError("empty SQL statement; pass one statement such as 'SELECT 1'")
    from retail_lakehouse.engine import delta_sql

    delta_sql.refuse_unsupported(statement, args)  # Change Data Feed: before anything changes
    if m := _SET_RETENTION.match(statement):
        _options["retention_check"] = m.group("value").lower() == "true"
        return spark.createDataFrame([(_RETENTION_CHECK_KEY, m.group("value").lower())], "key string, value string")
    if m := _SET_CDF_DEFAULT.match(statement):
        return _set_cdf_default(spark, m.group("value"))
    if _CLEAR_CACHE.match(statement) or re.match(r"\s*(UN)?CACHE\b", statement, re.IGNORECASE):
        return _cache(spark, settings, delta_sql.bind_parameters(statement, args) if args else statement)
    if delta_sql.is_delta_utility(statement):
        options = delta_sql.DeltaSqlOptions(retention_check=_options["retention_check"])
        frame = delta_sql.execute(statement, args, lambda n: resolve_table(n, settings), options)
        if m := _ALTER.match(statement):
            # The schema changed outside Sail: re-register the table so the session sees it.
            name = delta_sql.bind_parameters(m.group("name"), args) if args else m.group("name")
            full = qualify(name, settings)
            spark.sql(f"DROP TABLE IF EXISTS {full}")
            spark.sql(f"CREATE TABLE {full} USING delta LOCATION '{sql_string(str(table_dir(full, settings)))}'")
        return _to_spark(spark, frame)
    if m := _DROP.match(statement):
        return _drop_table(spark, settings, m.group("name"), if_exists=bool(m.group("ifexists")))
    if m := _CREATE.match(statement):
        statement = _with_location(statement, m, settings, spark, args)
    return _spark_sql(spark, settings, statement, args)


_QUERY = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|VALUES|FROM|TABLE|SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.IGNORECASE)


def _spark_sql(spark: SparkSession, settings: Settings, statement: str, args: Mapping[str, Any] | None) -> DataFrame:
    from pyspark.errors import PySparkException

    if args and not _QUERY.match(statement):
        # Sail 0.7 takes named parameters on queries only ("command with parameters" is refused):
        # bind them here as checked literals / identifiers, as Databricks does server-side.
        from retail_lakehouse.engine import delta_sql

        statement, args = delta_sql.bind_parameters(statement, args), None

    def run() -> DataFrame:
        df = spark.sql(statement, args=dict(args) if args else None)
        df.columns  # noqa: B018 - analyze now, so errors surface here and not at first use
        return df

    try:
        return run()
    except PySparkException as exc:
        text = str(exc)
        if "not found" in text.lower():
            # A table created by another session since this one started: register and retry once.
            register_tables(spark, settings)
            try:
                return run()
            except PySparkException as again:
                text = str(again)
        if "please specify: ChangeDataFeed" in text:
            raise UnsupportedLocallyError(
                "a table this statement writes has delta.enableChangeDataFeed = true in its Delta log (set "
                "outside this engine): the local engine (Sail) cannot write to Change Data Feed tables, which "
                "are a Databricks-only feature of this lakehouse. Nothing was written. Make the table "
                "writable locally with ALTER TABLE <table> SET TBLPROPERTIES ('delta.enableChangeDataFeed' = "
                "'false') and process increments by watermark (retail_lakehouse.engine.watermarks)."
                f"\n  in statement: {_short(statement, 400)}"
            ) from None
        raise SqlError(f"{_short(text)}\n  in statement: {_short(statement, 400)}") from None


def _short(text: str, limit: int = 1200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _set_cdf_default(spark: SparkSession, value: str) -> DataFrame:
    """`SET ...defaults.enableChangeDataFeed`: true is refused (new tables would be unwritable), false is a no-op."""
    from retail_lakehouse.engine import delta_sql

    key = delta_sql.CDF_DEFAULT_CONF
    if value.lower() == "true":
        raise delta_sql.change_data_feed_error(f"SET {key} = true")
    if value.lower() != "false":
        raise SqlError(f"SET {key}: the value must be true or false, got {value!r}")
    return spark.createDataFrame([(key, "false")], "key string, value string")


_CACHE_NOTICE = (
    "{what} is a no-op on the local engine (nothing is cached; Sail reads the latest snapshot at each "
    "query); Databricks SQL warehouses cache results and disk on their own"
)


def _cache(spark: SparkSession, settings: Settings, statement: str) -> DataFrame:
    """CACHE [LAZY] TABLE / UNCACHE TABLE / CLEAR CACHE: accepted as no-ops, with a one-row `notice`.

    The named table must exist (TableNotFoundError), except for UNCACHE TABLE IF EXISTS; `CACHE TABLE
    v AS query` creates the temporary view `v`, as on Databricks.
    """
    if _CLEAR_CACHE.match(statement):
        what = "CLEAR CACHE"
    else:
        m = _CACHE.match(statement)
        uncache = bool(m) and m.group("verb").upper() == "UNCACHE"  # type: ignore[union-attr]
        if m is None or (uncache and m.group("query")) or (not uncache and m.group("ifexists")):
            raise SqlError(
                f"cannot parse {statement.strip()!r}. Expected syntax: CACHE [LAZY] TABLE table_name "
                "[OPTIONS ('storageLevel' 'level')] [[AS] query] | UNCACHE TABLE [IF EXISTS] table_name | CLEAR CACHE"
            )
        verb, name, query = " ".join(m.group("verb").upper().split()), m.group("name"), m.group("query")
        what = f"{verb} TABLE {name}"
        if query:
            _spark_sql(spark, settings, f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {query}", None)
            what = f"{verb} TABLE {name} AS query created the temporary view {name}; caching it"
        elif not m.group("ifexists"):
            try:
                _spark_sql(spark, settings, f"SELECT * FROM {name} LIMIT 0", None)
            except SqlError as exc:
                if "not found" not in str(exc).lower():
                    raise
                raise TableNotFoundError(
                    name, f"{what}: table or view {name} does not exist; check the name (catalog.schema.table)"
                    + (" or use UNCACHE TABLE IF EXISTS" if uncache else " or create the table first")
                ) from None
    notice = _CACHE_NOTICE.format(what=what)
    log.info(notice)
    return spark.createDataFrame([(notice,)], "notice string")


def _with_location(
    statement: str, m: re.Match[str], settings: Settings, spark: SparkSession, args: Mapping[str, Any] | None
) -> str:
    """A managed CREATE TABLE (no LOCATION) gets its place under the local warehouse, as on Databricks."""
    if re.search(r"\bLOCATION\b", statement, re.IGNORECASE):
        return statement
    full = qualify(m.group("name"), settings)
    using = _USING.search(statement)
    if using and using.group("fmt").lower() != "delta":
        raise SqlError(f"only Delta tables are supported locally, not USING {using.group('fmt')}: {statement}")
    catalog, schema, _ = full.split(".")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {catalog}.{schema}")
    location = f" LOCATION '{sql_string(str(table_dir(full, settings)))}'"
    if using:
        pos = using.end()
        return statement[:pos] + location + statement[pos:]
    pos = m.end()
    rest = statement[pos:]
    if rest.lstrip().startswith("("):
        depth, start = 0, pos + (len(rest) - len(rest.lstrip()))
        for i in range(start, len(statement)):
            depth += {"(": 1, ")": -1}.get(statement[i], 0)
            if depth == 0:
                pos = i + 1
                break
    return statement[:pos] + " USING delta" + location + statement[pos:]


def _drop_table(spark: SparkSession, settings: Settings, name: str, *, if_exists: bool) -> DataFrame:
    """DROP TABLE of a managed local table removes its data too, as on Databricks."""
    full = qualify(name, settings)
    path = table_dir(full, settings)
    if not (path / "_delta_log").is_dir():
        if not if_exists:
            raise TableNotFoundError(name, f"table {full} does not exist; use DROP TABLE IF EXISTS")
    else:
        shutil.rmtree(path)
    spark.sql(f"DROP TABLE IF EXISTS {full}")
    mark_registered(spark, full, registered=False)
    return spark.createDataFrame([], "result string")


def _to_spark(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """pandas result of a delta-rs statement -> Spark DataFrame with map/array columns typed as Databricks'."""
    import pyarrow as pa

    arrays, fields = [], []
    for col in frame.columns:
        values = frame[col].tolist()
        sample = next((v for v in values if v is not None), None)
        if isinstance(sample, dict):
            typ = pa.map_(pa.string(), pa.string())
            values = [None if v is None else [(str(k), None if x is None else str(x)) for k, x in v.items()] for v in values]
        elif isinstance(sample, list | tuple):
            typ = pa.list_(pa.string())
            values = [None if v is None else [str(x) for x in v] for v in values]
        else:
            arr = pa.array(frame[col], from_pandas=True)
            typ = pa.string() if pa.types.is_null(arr.type) else arr.type
            values = arr.cast(typ)
        arrays.append(values if isinstance(values, pa.Array) else pa.array(values, typ))
        fields.append(pa.field(str(col), typ))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    if table.num_rows == 0:
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame([], from_arrow_schema(table.schema))
    return spark.createDataFrame(table)


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """Collect a (small) result to pandas."""
    return df.toPandas()


def spark_functions():  # noqa: ANN201 - the pyspark.sql.functions module
    """`pyspark.sql.functions`, imported on first use (heavy; notebooks and checks call it often)."""
    from pyspark.sql import functions

    return functions



def local_checkpoint(df: DataFrame) -> DataFrame:
    """`df.localCheckpoint()` bound to `df`'s own session.

    pyspark 4 binds a checkpoint's result to the thread's active session, which is the first session
    the process created (a later one, e.g. for another warehouse, is not made active): on a process
    with two sessions the result then names a relation the other session does not have ("remote
    checkpoint relation does not exist"). The thread's active session is `df`'s while it runs.
    """
    from pyspark.sql.connect.session import SparkSession

    local = SparkSession._active_session  # noqa: SLF001 - the thread-local slot pyspark reads
    previous = getattr(local, "session", None)
    local.session = df.sparkSession
    try:
        return df.localCheckpoint()
    finally:
        local.session = previous
