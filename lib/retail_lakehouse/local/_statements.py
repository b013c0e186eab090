"""SQL statement execution API 2.0 and query history, served by the embedded engine.

A statement runs in a worker thread through `engine.sql`, tagged so that canceling it interrupts
the engine's work (Spark Connect `interruptTag`); its result is kept as an Arrow table and answered
INLINE (JSON_ARRAY chunks) or as EXTERNAL_LINKS (ARROW_STREAM or JSON_ARRAY chunks downloaded from
signed, expiring URLs on this server): see `_results`. Statements naming `system.*` tables are
served by the local system tables.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import re
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from databricks.sdk.service import sql as dbsql

from retail_lakehouse.core.errors import LakehouseError
from retail_lakehouse.local import _query_history, _results
from retail_lakehouse.local._common import (
    LOCAL_USER,
    ApiError,
    RawBody,
    invalid,
    not_found,
    now_ms,
    paginate,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

WAREHOUSE_ID = "local-warehouse"
MAX_KEPT_RESULTS = 64  # results of older statements are dropped (state CLOSED), as results expire on Databricks
_WAIT = re.compile(r"^(\d+)s$")

_TYPE_NAMES = {
    "StringType": "STRING",
    "CharType": "CHAR",
    "VarcharType": "STRING",
    "LongType": "LONG",
    "IntegerType": "INT",
    "ShortType": "SHORT",
    "ByteType": "BYTE",
    "DoubleType": "DOUBLE",
    "FloatType": "FLOAT",
    "DecimalType": "DECIMAL",
    "BooleanType": "BOOLEAN",
    "DateType": "DATE",
    "TimestampType": "TIMESTAMP",
    "TimestampNTZType": "TIMESTAMP",
    "BinaryType": "BINARY",
    "ArrayType": "ARRAY",
    "MapType": "MAP",
    "StructType": "STRUCT",
    "NullType": "NULL",
    "DayTimeIntervalType": "INTERVAL",
    "YearMonthIntervalType": "INTERVAL",
}


@dataclass
class _Statement:
    statement_id: str
    text: str
    args: dict[str, Any]
    warehouse_id: str
    row_limit: int | None
    disposition: str = "INLINE"
    format: str = "JSON_ARRAY"
    state: str = "PENDING"
    submitted_ms: int = field(default_factory=now_ms)
    started_ms: int | None = None
    ended_ms: int | None = None
    error: tuple[str, str] | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)
    table: pa.Table | None = None
    result: _results.ResultSet | None = None
    truncated: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def tag(self) -> str:
        """The Spark Connect operation tag of the statement's engine work."""
        return f"statement-{self.statement_id}"


class StatementService:
    """Statements, their results and the query history of one local workspace."""

    def __init__(
        self,
        *,
        env: str,
        chunk_rows: int,
        chunk_bytes: int,
        link_chunk_rows: int = _results.ChunkLimits.link_rows,
        link_chunk_bytes: int = _results.ChunkLimits.link_bytes,
        max_workers: int = 4,
    ) -> None:
        self.env = env
        self.limits = _results.ChunkLimits(chunk_rows, chunk_bytes, link_chunk_rows, link_chunk_bytes)
        self.links = _results.LinkSigner()
        self.host = ""  # the server's base URL, set once it listens: external links point at it
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sql-statement")
        self._lock = threading.Lock()
        self._statements: OrderedDict[str, _Statement] = OrderedDict()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- API

    def execute(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("statement")
        if not isinstance(text, str) or not text.strip():
            raise invalid("statement is required")
        warehouse = body.get("warehouse_id")
        if warehouse != WAREHOUSE_ID:
            raise invalid(f"warehouse_id {warehouse!r} is not a warehouse of this workspace; use {WAREHOUSE_ID!r}")
        disposition, fmt = body.get("disposition") or "INLINE", body.get("format") or "JSON_ARRAY"
        if disposition not in ("INLINE", "EXTERNAL_LINKS"):
            raise invalid(f"disposition must be INLINE or EXTERNAL_LINKS, got {disposition!r}")
        if fmt not in ("JSON_ARRAY", "ARROW_STREAM", "CSV"):
            raise invalid(f"format must be JSON_ARRAY, ARROW_STREAM or CSV, got {fmt!r}")
        if disposition == "INLINE" and fmt != "JSON_ARRAY":
            raise invalid(f"disposition INLINE supports only format JSON_ARRAY, got {fmt}; use EXTERNAL_LINKS")
        if fmt == "CSV":
            raise invalid("format CSV is not served by the local workspace; use ARROW_STREAM or JSON_ARRAY")
        wait = str(body.get("wait_timeout") or "10s")
        m = _WAIT.match(wait)
        seconds = int(m.group(1)) if m else -1
        if seconds != 0 and not 5 <= seconds <= 50:
            raise invalid(f"wait_timeout must be 0s or between 5s and 50s, got {wait!r}")
        on_timeout = body.get("on_wait_timeout") or "CONTINUE"
        if on_timeout not in ("CONTINUE", "CANCEL"):
            raise invalid(f"on_wait_timeout must be CONTINUE or CANCEL, got {on_timeout!r}")
        row_limit = body.get("row_limit")
        st = _Statement(
            statement_id=str(uuid.uuid4()),
            text=text,
            args=_parameters(body.get("parameters") or []),
            warehouse_id=warehouse,
            row_limit=int(row_limit) if row_limit is not None else None,
            disposition=disposition,
            format=fmt,
        )
        with self._lock:
            self._statements[st.statement_id] = st
        self._pool.submit(self._run, st)
        if seconds and not st.done.wait(seconds) and on_timeout == "CANCEL":
            self._cancel(st)
        return self._response(st)

    def get(self, statement_id: str) -> dict[str, Any] | RawBody:
        return self._response(self._find(statement_id))

    def chunk(self, statement_id: str, index: int) -> dict[str, Any] | RawBody:
        """A chunk's rows (INLINE) or its link (EXTERNAL_LINKS, a fresh one: links expire)."""
        st = self._find(statement_id)
        if st.state != "SUCCEEDED":
            raise ApiError(400, "BAD_REQUEST", f"statement {statement_id} is {st.state}; it has no result")
        result = st.result
        if result is None:
            raise ApiError(400, "BAD_REQUEST", f"the result of statement {statement_id} expired (CLOSED)")
        result.check_index(index)
        if result.external:
            link = result.external_link(st.statement_id, index, self.links, self.host)
            return dbsql.ResultData(external_links=[link]).as_dict()
        data, rows = result.inline(st.statement_id, index)
        return _with_rows(data.as_dict(), rows)

    def download(self, statement_id: str, index: int, query: dict[str, Any], authorization: str | None) -> RawBody:
        """GET of an external link: the chunk's bytes, if the URL's signature holds (no bearer token)."""
        self.links.verify(statement_id, index, query, authorization)
        with self._lock:
            st = self._statements.get(statement_id)
        result = st.result if st is not None else None
        if result is None or not result.external:
            raise _results.gone(statement_id)
        return result.download(index)

    def cancel(self, statement_id: str) -> dict[str, Any]:
        self._cancel(self._find(statement_id))
        return {}

    def history(self, query: dict[str, Any]) -> dict[str, Any]:
        """GET /api/2.0/sql/history/queries: most recent first, filter_by.* as query parameters."""
        limit = int(query.get("max_results") or 100)
        if not 0 < limit <= 1000:
            raise invalid("max_results must be between 1 and 1000")
        from retail_lakehouse.local._common import page_offset

        offset = page_offset(query.get("page_token"))
        statuses = _listed(query.get("filter_by.statuses"))
        ids = _listed(query.get("filter_by.statement_ids"))
        warehouses = _listed(query.get("filter_by.warehouse_ids"))
        start_from = query.get("filter_by.query_start_time_range.start_time_ms")
        start_to = query.get("filter_by.query_start_time_range.end_time_ms")
        with self._lock:
            infos = [self._query_info(st) for st in reversed(self._statements.values())]
        # Then the queries other workspaces on this LAKEHOUSE_HOME (other processes, earlier runs) served.
        mine = {q.query_id for q in infos}
        infos += [
            dbsql.QueryInfo.from_dict(d)
            for d in _query_history.load()
            if d["query_id"] not in mine and (not ids or d["query_id"] in ids)
        ]
        infos.sort(key=lambda q: q.query_start_time_ms or 0, reverse=True)
        infos = [
            q
            for q in infos
            if (not statuses or q.status.value in statuses)
            and (not ids or q.query_id in ids)
            and (not warehouses or q.warehouse_id in warehouses)
            and (start_from is None or q.query_start_time_ms >= int(start_from))
            and (start_to is None or q.query_start_time_ms <= int(start_to))
        ]
        page, token = paginate(infos, limit=limit, offset=offset)
        return dbsql.ListQueriesResponse(
            res=page, next_page_token=token, has_next_page=token is not None
        ).as_dict()

    # -- execution

    def _run(self, st: _Statement) -> None:
        with self._lock:
            if st.state != "PENDING":
                return
            st.state, st.started_ms = "RUNNING", now_ms()
        spark = None
        try:
            from retail_lakehouse import engine
            from retail_lakehouse.local import _system_tables

            spark = engine.get_spark(self.env)
            spark.addTag(st.tag)  # thread-local: tags this statement's engine operations only
            text = _system_tables.prepare(st.text, env=self.env)
            df = engine.sql(text, st.args or None, env=self.env)
            st.columns = _columns(df.schema)
            if st.row_limit is not None:
                df = df.limit(st.row_limit + 1)
            if st.state != "RUNNING":  # canceled between the engine's operations
                raise _Canceled
            table = df.toArrow()
            if st.row_limit is not None and table.num_rows > st.row_limit:
                table, st.truncated = table.slice(0, st.row_limit), True
            result = _results.build(table, disposition=st.disposition, fmt=st.format, limits=self.limits)
            st.table, st.result = table, result
            final, error = "SUCCEEDED", None
        except _Canceled:
            final, error = "CANCELED", None
        except ApiError as exc:
            final, error = "FAILED", (exc.error_code, exc.message)
        except Exception as exc:  # the statement's own failure: reported in its status, never raised
            from retail_lakehouse.core.errors import LakehouseError, TableNotFoundError

            code = "BAD_REQUEST" if isinstance(exc, LakehouseError) else "INTERNAL_ERROR"
            # As Databricks says it, so that clients (run_sql) tell a missing table from other errors.
            tag = "[TABLE_OR_VIEW_NOT_FOUND] " if isinstance(exc, TableNotFoundError) else ""
            final, error = "FAILED", (code, f"{tag}{type(exc).__name__}: {exc}")
        finally:
            if spark is not None:
                spark.removeTag(st.tag)
        with self._lock:
            if st.state == "RUNNING":  # not canceled meanwhile
                st.state, st.error, st.ended_ms = final, error, now_ms()
            else:
                st.table, st.result = None, None
            self._expire()
            info = self._query_info(st).as_dict()
        _query_history.record(info)  # before done: a client told it finished finds it in the history
        st.done.set()

    def _cancel(self, st: _Statement) -> None:
        with self._lock:
            was = st.state
            if was in ("PENDING", "RUNNING"):
                st.state, st.ended_ms, st.table, st.result = "CANCELED", now_ms(), None, None
        if was == "PENDING":
            st.done.set()
        elif was == "RUNNING":
            self._interrupt(st)

    def _interrupt(self, st: _Statement) -> None:
        """Stop the engine's work on a statement (Spark Connect interruptTag; Sail supports it)."""
        try:
            from retail_lakehouse import engine

            engine.get_spark(self.env).interruptTag(st.tag)
        except Exception:  # noqa: BLE001 - the statement is CANCELED either way; its result is dropped
            log.debug("could not interrupt statement %s", st.statement_id, exc_info=True)

    def _expire(self) -> None:
        kept = [s for s in self._statements.values() if s.result is not None]
        for old in kept[:-MAX_KEPT_RESULTS]:
            old.table, old.result = None, None

    def _find(self, statement_id: str) -> _Statement:
        with self._lock:
            st = self._statements.get(statement_id)
        if st is None:
            raise not_found(f"statement {statement_id!r} does not exist")
        return st

    # -- responses

    def _response(self, st: _Statement) -> dict[str, Any] | RawBody:
        status = dbsql.StatementStatus(state=dbsql.StatementState(st.state))
        if st.error:
            status.error = dbsql.ServiceError(error_code=dbsql.ServiceErrorCode(st.error[0]), message=st.error[1])
        response = dbsql.StatementResponse(statement_id=st.statement_id, status=status)
        result = st.result
        if st.state == "SUCCEEDED" and result is not None:
            response.manifest = result.manifest(st.columns, st.truncated)
            if result.external:
                link = result.external_link(st.statement_id, 0, self.links, self.host)
                response.result = dbsql.ResultData(external_links=[link])
            else:
                response.result, rows = result.inline(st.statement_id, 0)
                body = response.as_dict()
                return _with_rows(body, rows, into=body["result"])
        elif st.state == "SUCCEEDED":
            response.status = dbsql.StatementStatus(state=dbsql.StatementState.CLOSED)
        return response.as_dict()

    def _query_info(self, st: _Statement) -> dbsql.QueryInfo:
        status = {
            "PENDING": "QUEUED",
            "RUNNING": "RUNNING",
            "SUCCEEDED": "FINISHED",
            "FAILED": "FAILED",
            "CANCELED": "CANCELED",
        }[st.state]
        end = st.ended_ms
        return dbsql.QueryInfo(
            query_id=st.statement_id,
            query_text=st.text,
            status=dbsql.QueryStatus(status),
            user_name=LOCAL_USER,
            executed_as_user_name=LOCAL_USER,
            warehouse_id=st.warehouse_id,
            endpoint_id=st.warehouse_id,
            query_start_time_ms=st.submitted_ms,
            execution_end_time_ms=end,
            query_end_time_ms=end,
            duration=(end - st.submitted_ms) if end else None,
            rows_produced=st.table.num_rows if st.table is not None else None,
            error_message=st.error[1] if st.error else None,
            is_final=end is not None,
            statement_type=_statement_type(st.text),
        )


# ----------------------------------------------------------------------------- pure helpers


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _statement_type(text: str) -> dbsql.QueryStatementType | None:
    word = text.strip().split(None, 1)[0].upper() if text.strip() else ""
    try:
        return dbsql.QueryStatementType(word)
    except ValueError:
        return dbsql.QueryStatementType.OTHER


def _parameters(params: list[dict[str, Any]]) -> dict[str, Any]:
    """Statement parameters `[{name, value, type}]` -> Python values typed as the `type` says."""
    out: dict[str, Any] = {}
    for p in params:
        name = p.get("name")
        if not name:
            raise invalid("every statement parameter needs a name")
        value, typ = p.get("value"), str(p.get("type") or "STRING").upper()
        base = typ.split("(", 1)[0].strip()
        try:
            if value is None:
                out[name] = None
            elif base in ("INT", "INTEGER", "BIGINT", "LONG", "SMALLINT", "SHORT", "TINYINT", "BYTE"):
                out[name] = int(value)
            elif base in ("DOUBLE", "FLOAT", "REAL"):
                out[name] = float(value)
            elif base in ("DECIMAL", "DEC", "NUMERIC"):
                out[name] = decimal.Decimal(value)
            elif base in ("BOOLEAN", "BOOL"):
                out[name] = str(value).lower() == "true"
            elif base == "DATE":
                out[name] = dt.date.fromisoformat(value)
            elif base.startswith("TIMESTAMP"):
                stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                out[name] = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
            else:
                out[name] = str(value)
        except (ValueError, decimal.InvalidOperation):
            raise invalid(f"parameter {name!r}: {value!r} is not a valid {typ}") from None
    return out


def _columns(schema: Any) -> list[dict[str, Any]]:
    """Spark schema -> manifest columns named with Databricks' type names."""
    cols = []
    for i, f in enumerate(schema.fields):
        t = f.dataType
        info: dict[str, Any] = {
            "name": f.name,
            "position": i,
            "type_name": _TYPE_NAMES.get(type(t).__name__, "USER_DEFINED_TYPE"),
            "type_text": type_text(t),
        }
        if type(t).__name__ == "DecimalType":
            info["type_precision"], info["type_scale"] = t.precision, t.scale
        cols.append(info)
    return cols


def type_text(t: Any) -> str:
    """Databricks' type text: `BIGINT`, `ARRAY<STRING>`, `STRUCT<a: INT>` (field names as they are)."""
    kind = type(t).__name__
    if kind == "ArrayType":
        return f"ARRAY<{type_text(t.elementType)}>"
    if kind == "MapType":
        return f"MAP<{type_text(t.keyType)}, {type_text(t.valueType)}>"
    if kind == "StructType":
        return "STRUCT<" + ", ".join(f"{f.name}: {type_text(f.dataType)}" for f in t.fields) + ">"
    return t.simpleString().upper()


class _Canceled(LakehouseError):
    """The statement was canceled while it ran."""


_ROWS = f"__rows_{uuid.uuid4().hex}__"  # stands for the rows while the rest of a response is dumped


def _with_rows(body: dict[str, Any], rows: Any, *, into: dict[str, Any] | None = None) -> dict[str, Any] | RawBody:
    """`body` with `data_array` set to JSON_ARRAY rows already serialized (bytes-like), as one RawBody."""
    if rows is None:
        return body
    (body if into is None else into)["data_array"] = _ROWS
    head, tail = json.dumps(body).encode().split(json.dumps(_ROWS).encode(), 1)
    return RawBody((head, b"[", rows, b"]", tail))
