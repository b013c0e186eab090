"""SQL statements on a Databricks SQL warehouse through `databricks-sdk`, results typed from their
manifest: `run_sql(w, statement, params)` returns a pandas DataFrame, the same against a real
workspace and the local one (`retail_lakehouse.databricks.workspace.connect`).

Small results come INLINE as JSON_ARRAY rows in the API responses; table queries as EXTERNAL_LINKS
with ARROW_STREAM chunks downloaded in parallel from the short-lived links the warehouse gives.
"""

from __future__ import annotations

import base64
import json
import re
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import ConfigError, ParameterError, SqlError, TableOrViewNotFoundError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd
    import pyarrow as pa
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.sql import StatementResponse

__all__ = ["run_sql", "warehouse_id"]


def warehouse_id(w: WorkspaceClient, env: str | None = None) -> str:
    """`databricks.warehouse_id` of the environment, else the first warehouse of the workspace.

    Raises:
        ConfigError: no warehouse is set and the workspace has none.
    """
    settings = load_settings(env)
    configured = settings.databricks.get("warehouse_id")
    if configured:
        return str(configured)
    for wh in w.warehouses.list():
        if wh.id:
            return wh.id
    raise ConfigError(f"no SQL warehouse: set databricks.warehouse_id in params/{settings.env}.yaml")


# ----------------------------------------------------------------------------- SQL


INLINE_MAX_ROWS = 10_000  # `auto`: a query ending in `LIMIT n` with n up to this is fetched INLINE
DOWNLOAD_THREADS = 4  # external-link chunks downloaded at once
DOWNLOAD_TIMEOUT = 120  # seconds a chunk download may stall (connect, or between bytes)
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_QUERY = re.compile(r"(?:\(\s*)*(?:SELECT|WITH|FROM|TABLE|VALUES)\b", re.IGNORECASE)
_READS_TABLE = re.compile(r"\b(?:FROM|TABLE)\b", re.IGNORECASE)
_LIMIT = re.compile(r"\bLIMIT\s+(\d+)\s*;?\s*$", re.IGNORECASE)


def run_sql(
    w: WorkspaceClient,
    statement: str,
    params: Mapping[str, Any] | None = None,
    *,
    warehouse_id: str | None = None,
    env: str | None = None,
    timeout: float = 600,
    disposition: Literal["auto", "INLINE", "EXTERNAL_LINKS"] = "auto",
) -> pd.DataFrame:
    """Run a statement on a SQL warehouse and return the whole result, typed from its manifest.

    Args:
        w: workspace client.
        statement: Databricks SQL with named parameters `:name`.
        params: parameter values (int, float, bool, Decimal, date, datetime, str, None).
        warehouse_id: warehouse (default: see `warehouse_id()`).
        env: environment whose settings name the warehouse.
        timeout: seconds to wait for the statement.
        disposition: how the result is fetched. `EXTERNAL_LINKS`: ARROW_STREAM chunks downloaded in
            parallel from the short-lived links the warehouse gives (without the workspace token),
            any size. `INLINE`: JSON_ARRAY rows in the API responses, at most 25 MiB. `auto`: INLINE
            for statements that read no table (`SELECT 1`, SHOW, DESCRIBE, DDL, DML) or end in
            `LIMIT n` with n <= INLINE_MAX_ROWS, EXTERNAL_LINKS for other queries.

    Raises:
        TableOrViewNotFoundError: the statement names a table or view that does not exist (also a
            SqlError and a TableNotFoundError).
        SqlError: the statement failed or was canceled, or a chunk could not be downloaded; the
            message has the warehouse's error.
    """
    from databricks.sdk.service.sql import Disposition, Format, StatementParameterListItem

    if disposition not in ("auto", "INLINE", "EXTERNAL_LINKS"):
        raise ParameterError("disposition", f"disposition must be auto, INLINE or EXTERNAL_LINKS, got {disposition!r}")
    external = disposition == "EXTERNAL_LINKS" or (disposition == "auto" and _wants_links(statement))
    wid = warehouse_id or globals()["warehouse_id"](w, env)
    items = [StatementParameterListItem(name=k, value=_param_value(v), type=_param_type(v)) for k, v in (params or {}).items()]
    response = w.statement_execution.execute_statement(
        statement,
        wid,
        parameters=items or None,
        wait_timeout="30s",
        on_wait_timeout=_continue(),
        disposition=Disposition.EXTERNAL_LINKS if external else Disposition.INLINE,
        format=Format.ARROW_STREAM if external else Format.JSON_ARRAY,
    )
    deadline = time.monotonic() + timeout
    delay = 0.05
    while response.status and response.status.state and response.status.state.value in ("PENDING", "RUNNING"):
        if time.monotonic() > deadline:
            w.statement_execution.cancel_execution(response.statement_id)
            raise SqlError(f"statement timed out after {timeout}s and was canceled: {statement[:200]}")
        time.sleep(delay)
        delay = min(1.0, delay * 2)
        response = w.statement_execution.get_statement(response.statement_id)
    state = response.status.state.value if response.status and response.status.state else "UNKNOWN"
    if state != "SUCCEEDED":
        err = response.status.error if response.status else None
        detail = f"{err.error_code.value if err and err.error_code else ''}: {err.message if err else ''}"
        message = f"statement {state}: {detail}\n  in statement: {statement[:400]}"
        if "TABLE_OR_VIEW_NOT_FOUND" in detail:
            named = re.search(r"not found: `?([\w.]+)|`([^`]+)`", detail)
            raise TableOrViewNotFoundError(next((g for g in named.groups() if g), "") if named else "", message)
        raise SqlError(message)
    manifest = response.manifest
    columns = manifest.schema.columns or [] if manifest and manifest.schema else []
    if external:
        table = _download_chunks(w, response)
        if table.num_rows == 0 and table.num_columns != len(columns):  # no chunk at all: an empty result
            table = _json_table(len(columns), [])
        return _frame(columns, table)
    rows: list[list[Any]] = list(response.result.data_array or []) if response.result else []
    next_index = response.result.next_chunk_index if response.result else None
    while next_index is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(response.statement_id, next_index)
        rows.extend(chunk.data_array or [])
        next_index = chunk.next_chunk_index
    return _frame(columns, _json_table(len(columns), rows))


def _wants_links(statement: str) -> bool:
    """`auto`: is the statement a query of a table whose result size nothing bounds?"""
    text = _LEADING_COMMENTS.sub("", statement, count=1)
    if not _QUERY.match(text) or not _READS_TABLE.search(text):
        return False
    limit = _LIMIT.search(text)
    return not (limit and int(limit.group(1)) <= INLINE_MAX_ROWS)


def _continue() -> Any:
    from databricks.sdk.service.sql import ExecuteStatementRequestOnWaitTimeout

    return ExecuteStatementRequestOnWaitTimeout.CONTINUE


def _param_type(value: Any) -> str:
    import datetime as dt

    if value is None:
        return "STRING"
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, Decimal):
        return "DECIMAL(38,18)"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "STRING"


def _param_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _download_chunks(w: WorkspaceClient, response: StatementResponse) -> pa.Table:
    """The ARROW_STREAM chunks of an EXTERNAL_LINKS result, downloaded in parallel, in order.

    Links are presigned URLs: fetched without the workspace's Authorization header (plain requests,
    no .netrc either), with the `http_headers` the link names. A link that expired or is refused is
    asked for again once (`get_statement_result_chunk_n` gives a fresh one).
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import requests

    sid = response.statement_id
    manifest = response.manifest
    count = (manifest.total_chunk_count or len(manifest.chunks or [])) if manifest else 0
    known = {link.chunk_index: link for link in (response.result.external_links or [])} if response.result else {}
    local = threading.local()
    sessions: list[requests.Session] = []

    def fresh_link(index: int) -> Any:
        links = w.statement_execution.get_statement_result_chunk_n(sid, index).external_links or []
        for link in links:
            if link.chunk_index == index:
                return link
        raise SqlError(f"the warehouse gave no link for chunk {index} of statement {sid}")

    def fetch(index: int) -> pa.Table:
        if not hasattr(local, "session"):
            local.session = requests.Session()  # one per thread: keep-alive across its chunks
            sessions.append(local.session)
        link = known.get(index)
        if link is None or _expired(link.expiration):
            link = fresh_link(index)
        for attempt in (1, 2):
            resp = local.session.get(
                link.external_link, headers=link.http_headers or {}, auth=_no_auth, timeout=DOWNLOAD_TIMEOUT
            )
            if resp.status_code in (401, 403) and attempt == 1:
                link = fresh_link(index)  # expired or revoked: a new link for the same chunk
                continue
            if resp.status_code != 200:  # the URL is a credential: never in a message
                raise SqlError(f"downloading chunk {index} of statement {sid} failed: HTTP {resp.status_code}")
            return pa.ipc.open_stream(pa.py_buffer(resp.content)).read_all()
        raise AssertionError("unreachable")

    if count == 0:
        return pa.table({})
    try:
        if count == 1:
            return fetch(0)
        with ThreadPoolExecutor(max_workers=min(DOWNLOAD_THREADS, count), thread_name_prefix="sql-chunk") as pool:
            tables = list(pool.map(fetch, range(count)))
        return pa.concat_tables(tables)
    finally:
        for session in sessions:
            session.close()


def _no_auth(request: Any) -> Any:
    """requests auth hook: no Authorization header at all (not even from ~/.netrc)."""
    request.headers.pop("Authorization", None)
    return request


def _expired(expiration: str | None) -> bool:
    from datetime import UTC, datetime, timedelta

    if not expiration:
        return False
    try:
        stamp = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        return False
    return stamp <= datetime.now(UTC) + timedelta(seconds=5)


def _json_table(width: int, rows: list[list[Any]]) -> pa.Table:
    """JSON_ARRAY rows (strings and nulls) -> an Arrow table of string columns `0..width-1`."""
    from operator import itemgetter

    import pyarrow as pa

    columns = [pa.array(list(map(itemgetter(i), rows)), pa.string()) for i in range(width)]
    return pa.Table.from_arrays(columns, names=[str(i) for i in range(width)])


def _frame(columns: list[Any], table: pa.Table) -> pd.DataFrame:
    """A result as pandas, each column typed from its Databricks type name.

    The same frame whether the values come as JSON_ARRAY text or as Arrow: integers as Int64,
    DOUBLE/FLOAT float64, DECIMAL Decimal, BOOLEAN boolean, DATE datetime64, TIMESTAMP UTC datetime64,
    ARRAY/MAP/STRUCT Python lists and dicts (as JSON reads them), BINARY bytes, the rest strings.
    """
    import pandas as pd

    series = {i: _series(col, table.column(i)) for i, col in enumerate(columns)}
    frame = pd.DataFrame(series)
    frame.columns = [c.name for c in columns]  # names may repeat (SELECT a.id, b.id)
    return frame


def _series(col: Any, values: pa.ChunkedArray) -> pd.Series:
    import pandas as pd
    import pyarrow as pa

    kind = col.type_name.value if col.type_name else "STRING"
    text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    try:
        if kind in ("LONG", "INT", "SHORT", "BYTE"):
            return values.cast(pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        if kind in ("DOUBLE", "FLOAT"):
            return values.cast(pa.float64()).to_pandas()
        if kind == "BOOLEAN":
            return values.cast(pa.bool_()).to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
        if kind == "DATE":
            return (values.cast(pa.date32()) if text else values).cast(pa.timestamp("ns")).to_pandas()
        if kind == "TIMESTAMP":
            return values.cast(pa.timestamp("ns", "UTC")).to_pandas()
        if kind == "DECIMAL" and text and col.type_precision and col.type_precision <= 38:
            return values.cast(pa.decimal128(col.type_precision, col.type_scale or 0)).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # values Arrow cannot parse or cast: pandas' lenient parsing below (unparsable -> null)
    if kind in ("DATE", "TIMESTAMP", "LONG", "INT", "SHORT", "BYTE", "DOUBLE", "FLOAT", "BOOLEAN"):
        return _lenient(kind, values)
    if kind in ("ARRAY", "MAP", "STRUCT"):
        items = values.to_pylist() if text else values.to_pylist(maps_as_pydicts="lossy")
        return pd.Series([None if v is None else json.loads(v) if text else _plain(v) for v in items], dtype=object)
    if kind == "DECIMAL":
        return pd.Series([None if v is None else Decimal(v) if text else v for v in values.to_pylist()], dtype=object)
    if kind == "BINARY":
        return pd.Series([None if v is None else base64.b64decode(v) if text else v for v in values.to_pylist()], dtype=object)
    if text or pa.types.is_null(values.type):
        return values.to_pandas().astype(object)
    return pd.Series([None if v is None else str(v) for v in values.to_pylist()], dtype=object)


def _lenient(kind: str, values: pa.ChunkedArray) -> pd.Series:
    import pandas as pd

    raw = pd.Series(values.to_pylist(), dtype=object)
    if kind == "DATE":
        return pd.to_datetime(raw, errors="coerce")
    if kind == "TIMESTAMP":
        return pd.to_datetime(raw, errors="coerce", utc=True)
    if kind == "BOOLEAN":
        # Value by value, the text Arrow's cast reads (case-insensitive); anything else -> null.
        return pd.array([None if v is None else _BOOL_TEXT.get(str(v).lower()) for v in raw], dtype="boolean")
    if kind in ("DOUBLE", "FLOAT"):
        return pd.to_numeric(raw, errors="coerce").astype("float64")
    return pd.array([_integer(v) for v in raw], dtype="Int64")


_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}
_INT64 = (-(2**63), 2**63 - 1)


def _integer(v: Any) -> int | None:
    """An integer value, or None when `v` is null, unparsable, not integral ('1.5') or beyond int64.

    Parsed as an exact Decimal, not a float, so 2**53 + 1 survives; a non-integral number is null
    rather than truncated, as a failed cast is elsewhere in this module.
    """
    if v is None:
        return None
    try:
        number = Decimal(v) if isinstance(v, int | str) else Decimal(str(v))
    except (ArithmeticError, ValueError, TypeError):
        return None
    # Range first: int() of text such as '1e999999999' would build a huge number.
    if not number.is_finite() or not _INT64[0] <= number <= _INT64[1] or number != number.to_integral_value():
        return None
    return int(number)


def _plain(v: Any) -> Any:
    """A nested Arrow value as JSON text of it would read: dict keys strings, dates, times and decimals
    as text (timestamps UTC with milliseconds, as JSON_ARRAY writes them)."""
    import datetime as dt

    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if isinstance(v, dt.date | Decimal):
        return str(v)
    if isinstance(v, bytes):
        return str(v)
    return v
