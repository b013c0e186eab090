"""Statement results: cut into chunks, serialized from Arrow, answered INLINE or as external links.

A result is the Arrow table the engine returns. Dispositions and formats as Databricks serves them:

- `INLINE` + `JSON_ARRAY`: chunks of at most `rows` rows and about `bytes` bytes of JSON, written from
  Arrow columns with Arrow compute (one Python object per value only for nested and binary columns)
  and spliced into the response as bytes. A result over 25 MiB (of Arrow: Databricks too counts its
  internal representation) fails, as on Databricks.
- `EXTERNAL_LINKS` + `ARROW_STREAM` (or `JSON_ARRAY`): chunks of about `link_bytes` bytes, each an
  Arrow IPC stream of record-batch slices (no copy through Python rows), made once when the
  statement ends. Each is downloaded from a presigned-style URL on the local server: an HMAC of
  statement, chunk and expiry under a per-server secret, valid `LINK_TTL_SECONDS`. Like a cloud
  storage URL it takes no bearer token; a request that sends one is refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from databricks.sdk.service import sql as dbsql

from retail_lakehouse.local._common import ApiError, RawBody, not_found

if TYPE_CHECKING:
    import pyarrow as pa

INLINE_LIMIT_BYTES = 25 * 1024 * 1024  # Databricks refuses larger INLINE results
LINK_TTL_SECONDS = 900  # external links live at most 15 minutes on Databricks
LINK_PATH = "/local-results"
ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class ChunkLimits:
    """How results are cut.

    Attributes:
        rows: most rows in an INLINE chunk.
        bytes: about the most bytes of JSON in an INLINE chunk.
        link_rows: most rows in an external-link chunk.
        link_bytes: about the most bytes (Arrow) in an external-link chunk.
    """

    rows: int = 10_000
    bytes: int = 16 * 1024 * 1024
    link_rows: int = 2**31
    link_bytes: int = 8 * 1024 * 1024


@dataclass
class ResultSet:
    """A statement's result, cut into chunks; `payloads` holds each external-link chunk's bytes."""

    table: pa.Table
    disposition: str
    format: str
    rows_per_chunk: int
    payloads: list[Any] = field(default_factory=list)

    @property
    def external(self) -> bool:
        return self.disposition == "EXTERNAL_LINKS"

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.table.num_rows // self.rows_per_chunk))

    def span(self, index: int) -> tuple[int, int]:
        """(row offset, row count) of a chunk."""
        offset = index * self.rows_per_chunk
        return offset, max(0, min(self.rows_per_chunk, self.table.num_rows - offset))

    def check_index(self, index: int) -> None:
        if not 0 <= index < self.chunk_count:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"chunk index {index} is out of range; the result has {self.chunk_count} chunk(s)",
            )

    def manifest(self, columns: list[dict[str, Any]], truncated: bool) -> dbsql.ResultManifest:
        chunks = []
        for i in range(self.chunk_count):
            offset, count = self.span(i)
            size = memoryview(self.payloads[i]).nbytes if self.external else None
            chunks.append(dbsql.BaseChunkInfo(chunk_index=i, row_offset=offset, row_count=count, byte_count=size))
        return dbsql.ResultManifest(
            format=dbsql.Format(self.format),
            schema=dbsql.ResultSchema(column_count=len(columns), columns=[dbsql.ColumnInfo.from_dict(c) for c in columns]),
            total_chunk_count=len(chunks),
            chunks=chunks,
            total_row_count=self.table.num_rows,
            total_byte_count=sum(c.byte_count or 0 for c in chunks) if self.external else None,
            truncated=truncated,
        )

    def next_link(self, statement_id: str, index: int) -> tuple[int | None, str | None]:
        if index + 1 >= self.chunk_count:
            return None, None
        return index + 1, f"/api/2.0/sql/statements/{statement_id}/result/chunks/{index + 1}"

    def inline(self, statement_id: str, index: int) -> tuple[dbsql.ResultData, Any]:
        """The chunk's ResultData (without rows) and its rows as JSON_ARRAY text (bytes-like, or None)."""
        offset, count = self.span(index)
        nxt, link = self.next_link(statement_id, index)
        data = dbsql.ResultData(
            chunk_index=index, row_offset=offset, row_count=count, next_chunk_index=nxt, next_chunk_internal_link=link
        )
        return data, (json_array(self.table.slice(offset, count)) if count else None)

    def external_link(self, statement_id: str, index: int, signer: LinkSigner, host: str) -> dbsql.ExternalLink:
        offset, count = self.span(index)
        nxt, link = self.next_link(statement_id, index)
        url, expiration = signer.sign(host, statement_id, index)
        return dbsql.ExternalLink(
            chunk_index=index,
            row_offset=offset,
            row_count=count,
            byte_count=memoryview(self.payloads[index]).nbytes,
            external_link=url,
            expiration=expiration,
            next_chunk_index=nxt,
            next_chunk_internal_link=link,
        )

    def download(self, index: int) -> RawBody:
        self.check_index(index)
        kind = ARROW_CONTENT_TYPE if self.format == "ARROW_STREAM" else "application/json"
        return RawBody((self.payloads[index],), content_type=kind)


def build(table: pa.Table, *, disposition: str, fmt: str, limits: ChunkLimits) -> ResultSet:
    """Cut a result into chunks (and make the external-link payloads).

    Raises:
        ApiError: an INLINE result over 25 MiB (BAD_REQUEST, as Databricks fails the statement).
    """
    rows = table.num_rows
    if disposition == "INLINE":
        if table.nbytes > INLINE_LIMIT_BYTES:
            raise ApiError(
                400,
                "BAD_REQUEST",
                f"Inline byte limit exceeded: the result has {table.nbytes} bytes and disposition=INLINE "
                f"serves at most {INLINE_LIMIT_BYTES}; execute the statement with disposition=EXTERNAL_LINKS "
                "to download the whole result",
            )
        per = limits.rows
        if rows:
            sample = table.slice(0, min(200, rows))
            row_bytes = max(1, (memoryview(json_array(sample)).nbytes + 1) // sample.num_rows)
            per = max(1, min(limits.rows, limits.bytes // row_bytes))
        return ResultSet(table, disposition, fmt, per)
    row_bytes = max(1, table.nbytes // rows) if rows else 1
    per = max(1, min(limits.link_rows, limits.link_bytes // row_bytes))
    result = ResultSet(table, disposition, fmt, per)
    for i in range(result.chunk_count):
        part = table.slice(*result.span(i))
        result.payloads.append(arrow_stream(part) if fmt == "ARROW_STREAM" else _json_file(part))
    return result


# ----------------------------------------------------------------------------- links


class LinkSigner:
    """Presigned-style URLs for result chunks: the credential is in the URL, never a bearer token."""

    def __init__(self, ttl_seconds: float = LINK_TTL_SECONDS) -> None:
        self.ttl_seconds = ttl_seconds
        self._key = secrets.token_bytes(32)  # per server: links die with it, as results do

    def _signature(self, statement_id: str, index: int, expires: int) -> str:
        return hmac.new(self._key, f"{statement_id}/{index}/{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, host: str, statement_id: str, index: int) -> tuple[str, str]:
        """(URL, expiration as RFC 3339) of a chunk's link."""
        expires = int(time.time() + self.ttl_seconds)
        url = f"{host}{LINK_PATH}/{statement_id}/{index}?expires={expires}&signature={self._signature(statement_id, index, expires)}"
        stamp = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return url, stamp

    def verify(self, statement_id: str, index: int, query: dict[str, Any], authorization: str | None) -> None:
        """Raises ApiError unless the URL's signature is right and unexpired and no bearer token is sent."""
        if authorization:
            raise ApiError(
                400,
                "BAD_REQUEST",
                "only one auth mechanism allowed: a result link carries its own credential; "
                "fetch it without the Authorization header (cloud storage refuses both)",
            )
        given, expires = str(query.get("signature") or ""), str(query.get("expires") or "")
        expected = self._signature(statement_id, index, int(expires)) if expires.isascii() and expires.isdigit() else ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(403, "PERMISSION_DENIED", "the link's signature does not match; request the chunk's link again")
        if int(expires) < time.time():
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                "the link expired; request a new one with GET /api/2.0/sql/statements/{id}/result/chunks/{index}",
            )


def gone(statement_id: str) -> ApiError:
    return not_found(f"the result of statement {statement_id} no longer exists")


# ----------------------------------------------------------------------------- formats


def arrow_stream(table: pa.Table) -> pa.Buffer:
    """An Arrow IPC stream of the table's record batches (slices of the engine's, not rows)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _json_file(table: pa.Table) -> bytes:
    return b"[" + bytes(memoryview(json_array(table))) + b"]"


def json_array(table: pa.Table) -> Any:
    """Rows in Databricks' JSON_ARRAY format without the outer brackets: `["1","a"],["2",null]`.

    Every value a JSON string (numbers, booleans, dates as text; timestamps UTC with milliseconds),
    null as null, nested values as JSON text, binary as base64. Returns a bytes-like object: the
    data buffer of an Arrow string array holding one `[...],` per row.
    """
    import numpy as np
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return b""
    if table.num_columns == 0:
        return b",".join([b"[]"] * n)
    cells = [_json_values(col) for col in table.columns]
    rows = pc.binary_join_element_wise("[", pc.binary_join_element_wise(*cells, ","), "],", "")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)
    start, end = int(offsets[rows.offset]), int(offsets[rows.offset + n])
    return rows.buffers()[2][start : end - 1]  # without the last row's comma


def _json_values(col: pa.ChunkedArray) -> pa.Array:
    """One column as JSON values: `"text"` or `null`, as an Arrow string array without nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_null(t):
        return pa.repeat(pa.scalar("null"), len(arr))
    if pa.types.is_timestamp(t):
        millis = pc.floor_temporal(arr, unit="millisecond").cast(pa.timestamp("ms", "UTC" if t.tz else None))
        text = pc.strftime(millis, format="%Y-%m-%dT%H:%M:%SZ")  # %S carries the milliseconds
    elif pa.types.is_nested(t):
        text = _escaped(pa.array([None if v is None else json.dumps(_jsonable(v, t), default=str) for v in arr.to_pylist()], pa.string()))
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        text = pa.array([None if v is None else base64.b64encode(v).decode() for v in arr.to_pylist()], pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = _escaped(arr.cast(pa.string()))
    else:
        try:
            text = pc.cast(arr, pa.string())  # numbers, booleans, dates, decimals: no character to escape
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            text = _escaped(pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string()))
    return pc.binary_join_element_wise('"', text, '"', "").fill_null("null")


def _escaped(text: pa.Array) -> pa.Array:
    """JSON string escapes (backslash, quote, control characters), as json.dumps writes them."""
    import pyarrow.compute as pc

    text = pc.replace_substring(text, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    if len(text) and pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        for code in range(32):
            text = pc.replace_substring(text, chr(code), json.dumps(chr(code))[1:-1])
    return text


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
