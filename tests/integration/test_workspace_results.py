"""Statement results through the real databricks-sdk: EXTERNAL_LINKS (ARROW_STREAM, JSON_ARRAY) next to
INLINE, the signed links, the 25 MiB INLINE limit, `run_sql` both ways, and cancel stopping the engine."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
import requests
from databricks.sdk.errors import InvalidParameterValue
from databricks.sdk.service.sql import Disposition, Format, StatementState

WH = "local-warehouse"
TYPES_SQL = (
    "SELECT id, CAST(id AS INT) AS n, CAST(id AS SMALLINT) AS sm, id * 1.5D AS d, CAST(id / 4 AS FLOAT) AS f, "
    "CAST(id / 4 AS DECIMAL(10,2)) AS m, id % 2 = 0 AS b, date_add(DATE'2024-03-01', CAST(id AS INT)) AS dt, "
    "TIMESTAMP'2024-03-01 12:30:00.125' + make_interval(0, 0, 0, 0, 0, 0, id) AS ts, "
    "concat('x \"q\" \\\\ é', id) AS s, array(id, NULL) AS a, map('k', id) AS mp, "
    "named_struct('f', id, 'g', 'h', 'd', DATE'2024-01-02') AS st, CAST(concat('b', id) AS BINARY) AS bin "
    "FROM range(10)"
)
# every column null in one row, so both paths type nulls alike; ordered: a union's order is not fixed
NULLS_SQL = (
    "SELECT * FROM (" + TYPES_SQL + " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL) ORDER BY id NULLS LAST"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws():
    """A local workspace whose INLINE chunks hold 4 rows and external-link chunks 3."""
    from retail_lakehouse import local as local_workspace

    workspace = local_workspace.start(chunk_rows=4, link_chunk_rows=3)
    yield workspace
    local_workspace.stop()


@pytest.fixture(scope="module")
def w(ws):
    from retail_lakehouse.databricks.workspace import connect

    return connect("local")


def external(w, sql: str, fmt: Format = Format.ARROW_STREAM):
    r = w.statement_execution.execute_statement(
        sql, WH, wait_timeout="30s", disposition=Disposition.EXTERNAL_LINKS, format=fmt
    )
    assert r.status.state == StatementState.SUCCEEDED, r.status
    return r


def all_links(w, r) -> list:
    """The links of every chunk, following next_chunk_index from the first."""
    links = list(r.result.external_links)
    while links[-1].next_chunk_index is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(r.statement_id, links[-1].next_chunk_index)
        assert chunk.data_array is None and len(chunk.external_links) == 1
        links += chunk.external_links
    return links


def test_external_links_arrow_stream_in_several_chunks(w):
    r = external(w, "SELECT id, CAST(id AS INT) AS n, concat('v', id) AS s FROM range(10)")
    m = r.manifest
    assert m.format == Format.ARROW_STREAM and m.total_row_count == 10 and m.total_chunk_count == 4
    assert [(c.chunk_index, c.row_offset, c.row_count) for c in m.chunks] == [(0, 0, 3), (1, 3, 3), (2, 6, 3), (3, 9, 1)]
    assert all(c.byte_count > 0 for c in m.chunks) and m.total_byte_count == sum(c.byte_count for c in m.chunks)
    assert r.result.data_array is None
    links = all_links(w, r)
    assert [x.chunk_index for x in links] == [0, 1, 2, 3]
    assert links[0].next_chunk_internal_link == f"/api/2.0/sql/statements/{r.statement_id}/result/chunks/1"
    assert links[-1].next_chunk_index is None and links[-1].next_chunk_internal_link is None
    tables = []
    for link, info in zip(links, m.chunks, strict=True):
        assert (link.row_offset, link.row_count, link.byte_count) == (info.row_offset, info.row_count, info.byte_count)
        expires = datetime.fromisoformat(link.expiration.replace("Z", "+00:00"))
        assert datetime.now(UTC) < expires <= datetime.now(UTC) + timedelta(minutes=15)
        resp = requests.get(link.external_link, timeout=30)  # no Authorization header
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
        assert len(resp.content) == link.byte_count
        table = pa.ipc.open_stream(resp.content).read_all()
        assert table.num_rows == link.row_count
        tables.append(table)
    table = pa.concat_tables(tables)
    assert table.schema.types == [pa.int64(), pa.int32(), pa.string()]
    assert table.column("id").to_pylist() == list(range(10))
    assert table.column("s").to_pylist() == [f"v{i}" for i in range(10)]


def test_external_json_array_rows_are_the_inline_rows(w):
    inline = w.statement_execution.execute_statement(NULLS_SQL, WH, wait_timeout="30s")
    rows = list(inline.result.data_array)
    n = inline.result.next_chunk_index
    while n is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(inline.statement_id, n)
        rows += chunk.data_array
        n = chunk.next_chunk_index
    r = external(w, NULLS_SQL, Format.JSON_ARRAY)
    assert r.manifest.format == Format.JSON_ARRAY and r.manifest.total_chunk_count == 4
    assert [c.as_dict() for c in r.manifest.schema.columns] == [c.as_dict() for c in inline.manifest.schema.columns]
    downloaded = []
    for link in all_links(w, r):
        resp = requests.get(link.external_link, timeout=30)
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
        downloaded += resp.json()
    assert len(rows) == 11 and downloaded == rows


def test_links_refuse_a_wrong_or_expired_signature(ws, w):
    r = external(w, "SELECT id FROM range(10)")
    url = r.result.external_links[0].external_link
    assert requests.get(url, timeout=30).status_code == 200
    base, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    wrong = {**params, "signature": "0" * 64}
    later = {**params, "expires": str(int(params["expires"]) + 3600)}  # a longer life is not signed
    odd = {**params, "signature": "é", "expires": "١٢"}  # non-ASCII: refused, not a server error
    for q in (wrong, later, odd, {"expires": params["expires"]}, {}):
        resp = requests.get(base, params=q, timeout=30)
        assert resp.status_code == 403 and resp.json()["error_code"] == "PERMISSION_DENIED"
    other_chunk = base.rsplit("/", 1)[0] + "/1"  # the signature binds the chunk too
    assert requests.get(other_chunk, params=params, timeout=30).status_code == 403
    links = ws.statements.links
    links.ttl_seconds = -1
    try:
        expired = w.statement_execution.get_statement_result_chunk_n(r.statement_id, 1).external_links[0]
    finally:
        links.ttl_seconds = 900
    resp = requests.get(expired.external_link, timeout=30)
    assert resp.status_code == 403 and "expired" in resp.json()["message"]
    fresh = w.statement_execution.get_statement_result_chunk_n(r.statement_id, 1).external_links[0]
    assert requests.get(fresh.external_link, timeout=30).status_code == 200


def test_links_take_no_bearer_token(ws, w):
    r = external(w, "SELECT 1 AS one FROM range(1)")
    url = r.result.external_links[0].external_link
    assert ws.token not in url
    resp = requests.get(url, headers={"Authorization": f"Bearer {ws.token}"}, timeout=30)
    assert resp.status_code == 400 and "Authorization" in resp.json()["message"]
    assert requests.get(url, timeout=30).status_code == 200


def test_run_sql_asks_again_for_an_expired_link(ws, w):
    from retail_lakehouse.databricks.statements import _download_chunks

    ws.statements.links.ttl_seconds = 1
    try:
        r = external(w, "SELECT id FROM range(10)")
    finally:
        ws.statements.links.ttl_seconds = 900
    time.sleep(1.2)
    assert requests.get(r.result.external_links[0].external_link, timeout=30).status_code == 403
    table = _download_chunks(w, r)
    assert table.column("id").to_pylist() == list(range(10))


def test_chunk_index_out_of_range(w):
    r = external(w, "SELECT id FROM range(10)")
    with pytest.raises(InvalidParameterValue, match="out of range"):
        w.statement_execution.get_statement_result_chunk_n(r.statement_id, 4)
    with pytest.raises(InvalidParameterValue, match="out of range"):
        w.statement_execution.get_statement_result_chunk_n(r.statement_id, -1)


def test_dispositions_and_formats_checked(w):
    with pytest.raises(InvalidParameterValue, match="INLINE supports only format JSON_ARRAY"):
        w.statement_execution.execute_statement("SELECT 1", WH, disposition=Disposition.INLINE, format=Format.ARROW_STREAM)
    with pytest.raises(InvalidParameterValue, match="CSV"):
        w.statement_execution.execute_statement("SELECT 1", WH, disposition=Disposition.EXTERNAL_LINKS, format=Format.CSV)


def test_inline_results_over_25_mib_fail_as_on_databricks(w):
    sql = "SELECT repeat('x', 27000000) AS s"
    r = w.statement_execution.execute_statement(sql, WH, wait_timeout="30s")
    assert r.status.state == StatementState.FAILED
    assert r.status.error.error_code.value == "BAD_REQUEST" and "EXTERNAL_LINKS" in r.status.error.message
    assert len(external(w, sql).result.external_links) == 1


def test_run_sql_gives_the_same_frame_both_ways(w):
    from retail_lakehouse.databricks.statements import run_sql

    inline = run_sql(w, NULLS_SQL, disposition="INLINE")
    links = run_sql(w, NULLS_SQL, disposition="EXTERNAL_LINKS")
    pd.testing.assert_frame_equal(inline, links)
    assert len(links) == 11 and links["id"].tolist()[:10] == list(range(10))
    dtypes = {k: str(v) for k, v in links.dtypes.items()}
    assert dtypes["id"] == dtypes["n"] == dtypes["sm"] == "Int64" and dtypes["d"] == dtypes["f"] == "float64"
    assert dtypes["b"] == "boolean" and dtypes["dt"] == "datetime64[ns]" and dtypes["ts"] == "datetime64[ns, UTC]"
    first = links.iloc[1]
    assert first["m"] == Decimal("0.25") and first["s"] == 'x "q" \\ é1' and first["bin"] == b"b1"
    assert first["ts"] == pd.Timestamp("2024-03-01 12:30:01.125", tz="UTC")
    assert first["a"] == [1, None] and first["mp"] == {"k": 1} and first["st"] == {"f": 1, "g": "h", "d": "2024-01-02"}
    assert links.iloc[10].isna().all()
    empty = "SELECT id, concat('v', id) AS s FROM range(0)"
    pd.testing.assert_frame_equal(run_sql(w, empty, disposition="INLINE"), run_sql(w, empty, disposition="EXTERNAL_LINKS"))
    assert str(run_sql(w, empty)["id"].dtype) == "Int64"


def test_run_sql_chooses_links_for_unbounded_queries():
    from retail_lakehouse.databricks.statements import _wants_links

    assert _wants_links("SELECT * FROM retail.gold.fact_sales")
    assert _wants_links("-- big\n/* all */ WITH x AS (SELECT 1) SELECT * FROM t")
    assert _wants_links("SELECT * FROM t LIMIT 1000000")
    for small in ("SELECT 1", "SELECT * FROM t LIMIT 10", "DESCRIBE DETAIL t", "SHOW TABLES", "INSERT INTO t SELECT * FROM u"):
        assert not _wants_links(small), small


def test_run_sql_refuses_an_unknown_disposition(w):
    from retail_lakehouse.core.errors import ParameterError
    from retail_lakehouse.databricks.statements import run_sql

    with pytest.raises(ParameterError, match="disposition"):
        run_sql(w, "SELECT 1", disposition="STREAM")  # type: ignore[arg-type]


def cpu_in(seconds: float) -> float:
    """CPU seconds this process (the engine runs in it) used over the next `seconds`."""
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


def test_cancel_stops_the_engine_work(ws, w):
    r = w.statement_execution.execute_statement("SELECT sum(id * 3) AS s FROM range(40000000000)", WH, wait_timeout="0s")
    st = ws.statements._find(r.statement_id)
    deadline = time.monotonic() + 60
    while cpu_in(0.5) < 0.15:  # until the engine is at work on it (minutes of work; the cores are shared)
        assert time.monotonic() < deadline and not st.done.is_set()
    busy = cpu_in(1.0)
    w.statement_execution.cancel_execution(r.statement_id)
    assert w.statement_execution.get_statement(r.statement_id).status.state == StatementState.CANCELED
    assert st.done.wait(15)  # the engine's operation was interrupted: the statement's worker is free
    idle = min(cpu_in(1.0) for _ in range(3))  # and the engine is idle again (other threads tick a little)
    assert idle < min(0.3, busy / 3), (busy, idle)
    r2 = w.statement_execution.execute_statement("SELECT 7 AS still_here", WH, wait_timeout="30s")
    assert r2.result.data_array == [["7"]]
