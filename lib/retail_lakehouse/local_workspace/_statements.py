"""SQL statement execution API 2.0 and query history, served by the embedded engine.

A statement runs in a worker thread through `engine.sql`; its result is kept as an Arrow table
and cut into chunks of at most `chunk_rows` rows and about `chunk_bytes` bytes of JSON, formatted
on request as Databricks' JSON_ARRAY format does (every value a string, null as null, nested
values as JSON text). Statements naming `system.*` tables are served by the local system tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from databricks.sdk.service import sql as dbsql

from retail_lakehouse.local_workspace._common import (
    LOCAL_USER,
    ApiError,
    invalid,
    not_found,
    now_ms,
    paginate,
)

if TYPE_CHECKING:
    import pyarrow as pa

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
    state: str = "PENDING"
    submitted_ms: int = field(default_factory=now_ms)
    started_ms: int | None = None
    ended_ms: int | None = None
    error: tuple[str, str] | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)
    table: pa.Table | None = None
    truncated: bool = False
    rows_per_chunk: int = 1
    done: threading.Event = field(default_factory=threading.Event)


class StatementService:
    """Statements, their results and the query history of one local workspace."""

    def __init__(self, *, env: str, chunk_rows: int, chunk_bytes: int, max_workers: int = 4) -> None:
        self.env, self.chunk_rows, self.chunk_bytes = env, chunk_rows, chunk_bytes
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
        if (body.get("disposition") or "INLINE") != "INLINE":
            raise invalid("only disposition INLINE is served by the local workspace")
        if (body.get("format") or "JSON_ARRAY") != "JSON_ARRAY":
            raise invalid("disposition INLINE supports only format JSON_ARRAY")
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
        )
        with self._lock:
            self._statements[st.statement_id] = st
        self._pool.submit(self._run, st)
        if seconds and not st.done.wait(seconds) and on_timeout == "CANCEL":
            self._cancel(st)
        return self._response(st)

    def get(self, statement_id: str) -> dict[str, Any]:
        return self._response(self._find(statement_id))

    def chunk(self, statement_id: str, index: int) -> dict[str, Any]:
        st = self._find(statement_id)
        if st.state != "SUCCEEDED":
            raise ApiError(400, "BAD_REQUEST", f"statement {statement_id} is {st.state}; it has no result")
        if st.table is None:
            raise ApiError(400, "BAD_REQUEST", f"the result of statement {statement_id} expired (CLOSED)")
        if not 0 <= index < self._chunk_count(st):
            raise invalid(f"chunk index {index} is out of range; the result has {self._chunk_count(st)} chunk(s)")
        return self._result(st, index).as_dict()

    def cancel(self, statement_id: str) -> dict[str, Any]:
        self._cancel(self._find(statement_id))
        return {}

    def history(self, query: dict[str, Any]) -> dict[str, Any]:
        """GET /api/2.0/sql/history/queries: most recent first, filter_by.* as query parameters."""
        limit = int(query.get("max_results") or 100)
        if not 0 < limit <= 1000:
            raise invalid("max_results must be between 1 and 1000")
        from retail_lakehouse.local_workspace._common import page_offset

        offset = page_offset(query.get("page_token"))
        statuses = _listed(query.get("filter_by.statuses"))
        ids = _listed(query.get("filter_by.statement_ids"))
        warehouses = _listed(query.get("filter_by.warehouse_ids"))
        start_from = query.get("filter_by.query_start_time_range.start_time_ms")
        start_to = query.get("filter_by.query_start_time_range.end_time_ms")
        with self._lock:
            infos = [self._query_info(st) for st in reversed(self._statements.values())]
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
        try:
            from retail_lakehouse import engine
            from retail_lakehouse.local_workspace import _system_tables

            text = _system_tables.prepare(st.text, env=self.env)
            df = engine.sql(text, st.args or None, env=self.env)
            st.columns = _columns(df.schema)
            if st.row_limit is not None:
                df = df.limit(st.row_limit + 1)
            table = df.toArrow()
            if st.row_limit is not None and table.num_rows > st.row_limit:
                table, st.truncated = table.slice(0, st.row_limit), True
            st.table = table
            st.rows_per_chunk = self._rows_per_chunk(table, st.columns)
            final, error = "SUCCEEDED", None
        except ApiError as exc:
            final, error = "FAILED", (exc.error_code, exc.message)
        except Exception as exc:  # the statement's own failure: reported in its status, never raised
            from retail_lakehouse.errors import LakehouseError

            code = "BAD_REQUEST" if isinstance(exc, LakehouseError) else "INTERNAL_ERROR"
            final, error = "FAILED", (code, f"{type(exc).__name__}: {exc}")
        with self._lock:
            if st.state == "RUNNING":  # not canceled meanwhile
                st.state, st.error, st.ended_ms = final, error, now_ms()
            else:
                st.table = None
            self._expire()
        st.done.set()

    def _cancel(self, st: _Statement) -> None:
        with self._lock:
            was = st.state
            if was in ("PENDING", "RUNNING"):
                st.state, st.ended_ms, st.table = "CANCELED", now_ms(), None
        if was == "PENDING":
            st.done.set()

    def _expire(self) -> None:
        kept = [s for s in self._statements.values() if s.table is not None]
        for old in kept[:-MAX_KEPT_RESULTS]:
            old.table = None

    def _find(self, statement_id: str) -> _Statement:
        with self._lock:
            st = self._statements.get(statement_id)
        if st is None:
            raise not_found(f"statement {statement_id!r} does not exist")
        return st

    # -- responses

    def _response(self, st: _Statement) -> dict[str, Any]:
        status = dbsql.StatementStatus(state=dbsql.StatementState(st.state))
        if st.error:
            status.error = dbsql.ServiceError(error_code=dbsql.ServiceErrorCode(st.error[0]), message=st.error[1])
        response = dbsql.StatementResponse(statement_id=st.statement_id, status=status)
        if st.state == "SUCCEEDED" and st.table is not None:
            response.manifest = self._manifest(st)
            response.result = self._result(st, 0)
        elif st.state == "SUCCEEDED":
            response.status = dbsql.StatementStatus(state=dbsql.StatementState.CLOSED)
        return response.as_dict()

    def _chunk_count(self, st: _Statement) -> int:
        rows = st.table.num_rows if st.table is not None else 0
        return max(1, -(-rows // st.rows_per_chunk))

    def _manifest(self, st: _Statement) -> dbsql.ResultManifest:
        assert st.table is not None
        rows, per = st.table.num_rows, st.rows_per_chunk
        chunks = [
            dbsql.BaseChunkInfo(chunk_index=i, row_offset=i * per, row_count=min(per, rows - i * per))
            for i in range(self._chunk_count(st))
        ]
        return dbsql.ResultManifest(
            format=dbsql.Format.JSON_ARRAY,
            schema=dbsql.ResultSchema(
                column_count=len(st.columns), columns=[dbsql.ColumnInfo.from_dict(c) for c in st.columns]
            ),
            total_chunk_count=len(chunks),
            chunks=chunks,
            total_row_count=rows,
            truncated=st.truncated,
        )

    def _result(self, st: _Statement, index: int) -> dbsql.ResultData:
        assert st.table is not None
        per, count = st.rows_per_chunk, self._chunk_count(st)
        part = st.table.slice(index * per, per)
        data = json_rows(part)
        result = dbsql.ResultData(
            chunk_index=index,
            row_offset=index * per,
            row_count=part.num_rows,
            data_array=data,
        )
        if index + 1 < count:
            result.next_chunk_index = index + 1
            result.next_chunk_internal_link = f"/api/2.0/sql/statements/{st.statement_id}/result/chunks/{index + 1}"
        return result

    def _rows_per_chunk(self, table: pa.Table, columns: list[dict[str, Any]]) -> int:
        if table.num_rows == 0:
            return self.chunk_rows
        sample = table.slice(0, min(200, table.num_rows))
        row_bytes = max(1, len(json.dumps(json_rows(sample))) // sample.num_rows)
        return max(1, min(self.chunk_rows, self.chunk_bytes // row_bytes))

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


def json_rows(table: pa.Table) -> list[list[str | None]]:
    """Rows of an Arrow table in the JSON_ARRAY format: strings, null as None, nested as JSON."""
    if table.num_columns == 0:
        return [[] for _ in range(table.num_rows)]
    columns = [_strings(col) for col in table.columns]
    return [list(row) for row in zip(*columns, strict=True)]


def _strings(col: pa.ChunkedArray) -> list[str | None]:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_null(t):
        return [None] * len(col)
    if pa.types.is_timestamp(t):
        return [None if v is None else _timestamp(v) for v in col.to_pylist()]
    if pa.types.is_nested(t):
        return [None if v is None else json.dumps(_jsonable(v, t), default=str) for v in col.to_pylist()]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [None if v is None else base64.b64encode(v).decode() for v in col.to_pylist()]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.to_pylist()
    return pc.cast(col, pa.string()).to_pylist()


def _timestamp(v: dt.datetime) -> str:
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC)
    return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"


def _jsonable(v: Any, t: Any) -> Any:
    import pyarrow as pa

    if v is None:
        return None
    if pa.types.is_map(t):
        return {str(k): _jsonable(x, t.item_type) for k, x in v}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_jsonable(x, t.value_type) for x in v]
    if pa.types.is_struct(t):
        return {t.field(i).name: _jsonable(v.get(t.field(i).name), t.field(i).type) for i in range(t.num_fields)}
    if isinstance(v, dt.datetime):
        return _timestamp(v)
    if isinstance(v, dt.date | decimal.Decimal):
        return str(v)
    return v

