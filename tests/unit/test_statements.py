"""databricks.statements without a server: results typed from hand-built manifests, JSON rows and Arrow.

`run_sql` is driven by a stub of the SDK's `statement_execution` service that answers with
StatementResponse objects built from API-shaped dicts.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest
from databricks.sdk.service.sql import ColumnInfo, ResultData, StatementResponse

from retail_lakehouse.core.errors import ConfigError, ParameterError, SqlError
from retail_lakehouse.databricks import statements
from retail_lakehouse.databricks.statements import _frame, _json_table, run_sql


def cols(*specs: dict) -> list[ColumnInfo]:
    return [ColumnInfo.from_dict({"position": i, **s}) for i, s in enumerate(specs)]


def typed(type_name: str, values: list, **extra) -> pd.Series:
    """One JSON_ARRAY column of `type_name` through the typing."""
    frame = _frame(
        cols({"name": "c", "type_name": type_name, **extra}), _json_table(1, [[v] for v in values])
    )
    return frame["c"]


# ----------------------------------------------------------------------------- JSON_ARRAY rows


def test_integers_are_nullable_int64_without_float_rounding():
    s = typed("LONG", ["1", None, "-7", "9007199254740993"])
    assert str(s.dtype) == "Int64"
    assert s.tolist() == [1, pd.NA, -7, 9007199254740993]  # 2**53 + 1 survives (no float on the way)


@pytest.mark.parametrize("kind", ["INT", "SHORT", "BYTE"])
def test_every_integer_kind_is_int64(kind):
    s = typed(kind, ["12", None])
    assert str(s.dtype) == "Int64" and s.tolist() == [12, pd.NA]


def test_doubles_and_floats_are_float64():
    s = typed("DOUBLE", ["1.5", None, "-inf", "1e3"])
    assert s.dtype == "float64"
    assert s.iloc[0] == 1.5 and pd.isna(s.iloc[1]) and s.iloc[2] == float("-inf") and s.iloc[3] == 1000.0
    assert typed("FLOAT", ["0.25"]).tolist() == [0.25]


def test_decimals_are_exact_decimals_with_their_scale():
    s = typed("DECIMAL", ["12.30", None, "-0.05", "9999999999.99"], type_precision=12, type_scale=2)
    assert s.dtype == object
    assert s.tolist() == [Decimal("12.30"), None, Decimal("-0.05"), Decimal("9999999999.99")]
    assert str(s.iloc[0]) == "12.30"  # the scale is kept, not 12.3


def test_a_decimal_wider_than_arrow_or_without_precision_stays_exact():
    wide = "123456789012345678901234567890123456789.5"
    assert typed("DECIMAL", [wide], type_precision=40, type_scale=1).tolist() == [Decimal(wide)]
    assert typed("DECIMAL", ["1.5", None]).tolist() == [Decimal("1.5"), None]


def test_booleans_are_nullable_booleans():
    s = typed("BOOLEAN", ["true", None, "false", "TRUE"])
    assert str(s.dtype) == "boolean"
    assert s.tolist() == [True, pd.NA, False, True]


def test_dates_are_datetime64_at_midnight():
    s = typed("DATE", ["2024-02-29", None, "1999-12-31"])
    assert s.dtype == "datetime64[ns]"
    assert s.tolist()[0] == pd.Timestamp("2024-02-29") and pd.isna(s.iloc[1])
    assert s.iloc[2] == pd.Timestamp("1999-12-31")


def test_timestamps_are_utc_datetime64():
    s = typed("TIMESTAMP", ["2024-01-05T10:00:00.123Z", None, "2024-02-29T23:59:59.000Z"])
    assert str(s.dtype) == "datetime64[ns, UTC]"
    assert s.iloc[0] == pd.Timestamp("2024-01-05 10:00:00.123", tz="UTC")
    assert pd.isna(s.iloc[1])
    assert s.iloc[2] == pd.Timestamp("2024-02-29 23:59:59", tz="UTC")


def test_a_timestamp_with_an_offset_is_moved_to_utc():
    assert typed("TIMESTAMP", ["2024-01-05T10:00:00+02:00"]).tolist() == [
        pd.Timestamp("2024-01-05 08:00", tz="UTC")
    ]


@pytest.mark.filterwarnings(
    "ignore:Could not infer format:UserWarning"
)  # pandas' per-value fallback, expected
def test_unparsable_dates_timestamps_and_numbers_become_null():
    dates = typed("DATE", ["2024-13-01", "2024-01-01"])
    assert pd.isna(dates.iloc[0]) and dates.iloc[1] == pd.Timestamp("2024-01-01")
    stamps = typed("TIMESTAMP", ["garbage", "2024-01-05T10:00:00.000Z"])
    assert pd.isna(stamps.iloc[0]) and stamps.iloc[1] == pd.Timestamp("2024-01-05 10:00", tz="UTC")
    ints = typed("INT", ["1", "x", None])
    assert str(ints.dtype) == "Int64" and ints.tolist() == [1, pd.NA, pd.NA]
    doubles = typed("DOUBLE", ["x", "2.5"])
    assert pd.isna(doubles.iloc[0]) and doubles.iloc[1] == 2.5


def test_an_unparsable_boolean_becomes_null():
    assert typed("BOOLEAN", ["1", "maybe", None]).tolist() == [True, pd.NA, pd.NA]
    # Value by value as Arrow reads them, whatever their neighbours: true/false in any case, 1/0.
    assert typed("BOOLEAN", ["FALSE", "0", "True", "yes", ""]).tolist() == [False, False, True, pd.NA, pd.NA]


def test_a_non_integral_value_in_an_integer_column_does_not_raise():
    s = typed("INT", ["1.5", "x"])
    assert pd.isna(s.iloc[1])
    # A non-integral number is null, not truncated; integers keep every digit on the lenient path too.
    s = typed("LONG", ["1.5", "x", "2", "9007199254740993", "1e999999999", None])
    assert str(s.dtype) == "Int64"
    assert s.tolist() == [pd.NA, pd.NA, 2, 9007199254740993, pd.NA, pd.NA]


def test_nested_types_are_python_values_as_json_reads_them():
    arr = typed("ARRAY", ["[1,2]", None, "[]"])
    assert arr.tolist() == [[1, 2], None, []]
    assert typed("MAP", ['{"k":"v"}']).tolist() == [{"k": "v"}]
    assert typed("STRUCT", ['{"a":1,"b":{"c":[true]}}']).tolist() == [{"a": 1, "b": {"c": [True]}}]


def test_binary_is_decoded_from_base64():
    assert typed("BINARY", ["aGk=", None, ""]).tolist() == [b"hi", None, b""]


def test_strings_and_other_kinds_stay_text_with_none_for_null():
    assert typed("STRING", ["x", None, ""]).tolist() == ["x", None, ""]
    assert typed("INTERVAL", ["1 day"]).tolist() == ["1 day"]
    assert typed("STRING", [None, None]).tolist() == [None, None]


def test_a_result_keeps_column_order_and_repeated_names():
    columns = cols(
        {"name": "id", "type_name": "LONG"},
        {"name": "id", "type_name": "STRING"},
        {"name": "n", "type_name": "INT"},
    )
    frame = _frame(columns, _json_table(3, [["1", "a", "5"], ["2", None, None]]))
    assert list(frame.columns) == ["id", "id", "n"]
    assert frame.iloc[:, 0].tolist() == [1, 2] and frame.iloc[:, 1].tolist() == ["a", None]
    assert [str(t) for t in frame.dtypes] == ["Int64", "object", "Int64"]


def test_an_empty_result_still_has_typed_columns():
    columns = cols(
        {"name": "n", "type_name": "LONG"},
        {"name": "d", "type_name": "DATE"},
        {"name": "s", "type_name": "STRING"},
    )
    frame = _frame(columns, _json_table(3, []))
    assert list(frame.columns) == ["n", "d", "s"] and len(frame) == 0
    assert [str(t) for t in frame.dtypes] == ["Int64", "datetime64[ns]", "object"]


def test_json_table_is_string_columns_by_position():
    table = _json_table(2, [["1", None], ["x", "y"]])
    assert table.column_names == ["0", "1"]
    assert table.schema.types == [pa.string(), pa.string()]
    assert table.column(1).to_pylist() == [None, "y"]


# ----------------------------------------------------------------------------- Arrow chunks: the same frame

ALL_KINDS = cols(
    {"name": "i", "type_name": "INT"},
    {"name": "d", "type_name": "DECIMAL", "type_precision": 12, "type_scale": 2},
    {"name": "day", "type_name": "DATE"},
    {"name": "ts", "type_name": "TIMESTAMP"},
    {"name": "b", "type_name": "BOOLEAN"},
    {"name": "f", "type_name": "DOUBLE"},
    {"name": "arr", "type_name": "ARRAY"},
    {"name": "m", "type_name": "MAP"},
    {"name": "st", "type_name": "STRUCT"},
    {"name": "bin", "type_name": "BINARY"},
    {"name": "s", "type_name": "STRING"},
)


def test_arrow_and_json_rows_give_the_same_frame():
    utc = dt.UTC
    arrow = pa.table(
        {
            "i": pa.array([1, None], pa.int32()),
            "d": pa.array([Decimal("12.30"), None], pa.decimal128(12, 2)),
            "day": pa.array([dt.date(2024, 1, 5), None], pa.date32()),
            "ts": pa.array(
                [dt.datetime(2024, 1, 5, 10, 0, 0, 123000, tzinfo=utc), None], pa.timestamp("us", "UTC")
            ),
            "b": pa.array([True, None]),
            "f": pa.array([1.5, None]),
            "arr": pa.array([[1, 2], None], pa.list_(pa.int64())),
            "m": pa.array([[("k", dt.date(2024, 1, 5))], None], pa.map_(pa.string(), pa.date32())),
            "st": pa.array(
                [{"a": Decimal("1.50"), "t": dt.datetime(2024, 1, 5, 10, 0, tzinfo=utc)}, None],
                pa.struct([("a", pa.decimal128(4, 2)), ("t", pa.timestamp("us", "UTC"))]),
            ),
            "bin": pa.array([b"hi", None], pa.binary()),
            "s": pa.array(["x", None]),
        }
    )
    json_rows = [
        [
            "1",
            "12.30",
            "2024-01-05",
            "2024-01-05T10:00:00.123Z",
            "true",
            "1.5",
            "[1,2]",
            '{"k":"2024-01-05"}',
            '{"a":"1.50","t":"2024-01-05T10:00:00.000Z"}',
            "aGk=",
            "x",
        ],
        [None] * 11,
    ]
    from_arrow = _frame(ALL_KINDS, arrow)
    from_json = _frame(ALL_KINDS, _json_table(len(ALL_KINDS), json_rows))
    pd.testing.assert_frame_equal(from_arrow, from_json)
    first = from_arrow.iloc[0].to_dict()
    assert first["d"] == Decimal("12.30") and first["st"] == {"a": "1.50", "t": "2024-01-05T10:00:00.000Z"}
    assert first["m"] == {"k": "2024-01-05"}


def test_arrow_naive_timestamps_are_read_as_utc_and_other_values_as_text():
    columns = cols({"name": "ts", "type_name": "TIMESTAMP"}, {"name": "s", "type_name": "STRING"})
    arrow = pa.table({"ts": pa.array([dt.datetime(2024, 1, 5, 10)], pa.timestamp("us")), "s": pa.array([42])})
    frame = _frame(columns, arrow)
    assert frame["ts"].tolist() == [pd.Timestamp("2024-01-05 10:00", tz="UTC")]
    assert frame["s"].tolist() == ["42"]


# ----------------------------------------------------------------------------- parameters and disposition


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (None, "STRING", None),
        (True, "BOOLEAN", "true"),
        (False, "BOOLEAN", "false"),
        (7, "BIGINT", "7"),
        (1.5, "DOUBLE", "1.5"),
        (Decimal("12.30"), "DECIMAL(38,18)", "12.30"),
        (dt.datetime(2024, 1, 5, 10, 30), "TIMESTAMP", "2024-01-05T10:30:00"),
        (dt.date(2024, 1, 5), "DATE", "2024-01-05"),
        ("orders", "STRING", "orders"),
    ],
)
def test_parameter_types_and_values(value, kind, text):
    assert statements._param_type(value) == kind
    assert statements._param_value(value) == text


@pytest.mark.parametrize(
    ("statement", "links"),
    [
        ("SELECT 1", False),
        ("SHOW TABLES IN retail_datalake.gold", False),
        ("DESCRIBE TABLE retail_datalake.gold.fact_sales", False),
        ("INSERT INTO t SELECT * FROM s", False),  # DML: no result rows to download
        ("SELECT * FROM retail_datalake.gold.fact_sales", True),
        ("select * from t limit 10", False),
        ("SELECT * FROM t LIMIT 10000;", False),
        ("SELECT * FROM t LIMIT 10001", True),
        ("WITH x AS (SELECT * FROM t) SELECT * FROM x", True),
        ("-- note\n/* block */ SELECT * FROM t", True),
        ("(SELECT a FROM t)", True),
        ("TABLE retail_datalake.gold.dim_date", True),
    ],
)
def test_auto_disposition(statement, links):
    assert statements._wants_links(statement) is links


# ----------------------------------------------------------------------------- run_sql against a stub service


class _Service:
    """The SDK's statement_execution: answers from API-shaped dicts, records what it was asked."""

    def __init__(
        self, first: dict, polls: list[dict] | None = None, chunks: dict[int, dict] | None = None
    ) -> None:
        self.first, self.polls, self.chunks = first, list(polls or []), chunks or {}
        self.executed: list[dict] = []
        self.canceled: list[str] = []
        self.fetched: list[int] = []

    def execute_statement(self, statement, warehouse_id, **kwargs):
        self.executed.append({"statement": statement, "warehouse_id": warehouse_id, **kwargs})
        return StatementResponse.from_dict(self.first)

    def get_statement(self, statement_id):
        assert statement_id == "s-1"
        return StatementResponse.from_dict(self.polls.pop(0))

    def get_statement_result_chunk_n(self, statement_id, index):
        assert statement_id == "s-1"
        self.fetched.append(index)
        return ResultData.from_dict(self.chunks[index])

    def cancel_execution(self, statement_id):
        self.canceled.append(statement_id)


def _client(service: _Service, warehouses: list[str | None] = ()) -> SimpleNamespace:
    listed = [SimpleNamespace(id=w) for w in warehouses]
    return SimpleNamespace(statement_execution=service, warehouses=SimpleNamespace(list=lambda: iter(listed)))


MANIFEST = {
    "schema": {
        "column_count": 3,
        "columns": [
            {"name": "order_id", "type_name": "LONG", "position": 0},
            {"name": "amount", "type_name": "DECIMAL", "type_precision": 12, "type_scale": 2, "position": 1},
            {"name": "order_date", "type_name": "DATE", "position": 2},
        ],
    },
    "total_chunk_count": 2,
}


def _succeeded(**result) -> dict:
    return {"statement_id": "s-1", "status": {"state": "SUCCEEDED"}, "manifest": MANIFEST, "result": result}


def test_run_sql_inline_reads_every_chunk_and_types_the_result():
    service = _Service(
        {"statement_id": "s-1", "status": {"state": "PENDING"}},
        polls=[
            {"statement_id": "s-1", "status": {"state": "RUNNING"}},
            _succeeded(data_array=[["1", "10.50", "2024-01-05"]], next_chunk_index=1),
        ],
        chunks={1: {"data_array": [["2", None, None]], "chunk_index": 1}},
    )
    frame = run_sql(
        _client(service),
        "SELECT * FROM orders WHERE order_date >= :day AND paid = :paid LIMIT 100",
        {"day": dt.date(2024, 1, 5), "paid": True},
        warehouse_id="wh-1",
    )
    assert frame.to_dict("list") == {
        "order_id": [1, 2],
        "amount": [Decimal("10.50"), None],
        "order_date": [pd.Timestamp("2024-01-05"), pd.NaT],
    }
    assert str(frame["order_id"].dtype) == "Int64"
    (call,) = service.executed
    assert call["warehouse_id"] == "wh-1"
    assert call["disposition"].value == "INLINE" and call["format"].value == "JSON_ARRAY"  # LIMIT 100: inline
    assert [(p.name, p.value, p.type) for p in call["parameters"]] == [
        ("day", "2024-01-05", "DATE"),
        ("paid", "true", "BOOLEAN"),
    ]
    assert service.fetched == [1] and service.polls == []


def test_run_sql_without_parameters_sends_none_and_uses_the_first_warehouse():
    service = _Service(_succeeded(data_array=[["1", "1.00", "2024-01-01"]]))
    frame = run_sql(_client(service, warehouses=[None, "wh-first", "wh-second"]), "SELECT 1", env="local")
    assert frame["order_id"].tolist() == [1]
    (call,) = service.executed
    assert call["parameters"] is None and call["warehouse_id"] == "wh-first"


def test_warehouse_id_without_any_warehouse_says_where_to_set_it():
    with pytest.raises(
        ConfigError, match=r"no SQL warehouse: set databricks.warehouse_id in params/local.yaml"
    ):
        statements.warehouse_id(_client(_Service({})), env="local")


def test_a_failed_statement_raises_with_the_warehouse_error():
    service = _Service(
        {
            "statement_id": "s-1",
            "status": {
                "state": "FAILED",
                "error": {"error_code": "BAD_REQUEST", "message": "[TABLE_OR_VIEW_NOT_FOUND] nope"},
            },
        }
    )
    with pytest.raises(SqlError) as info:
        run_sql(_client(service), "SELECT * FROM nope", warehouse_id="wh-1")
    message = str(info.value)
    assert message.startswith("statement FAILED: BAD_REQUEST: [TABLE_OR_VIEW_NOT_FOUND] nope")
    assert "in statement: SELECT * FROM nope" in message


def test_a_canceled_statement_raises():
    service = _Service({"statement_id": "s-1", "status": {"state": "CANCELED"}})
    with pytest.raises(SqlError, match=r"statement CANCELED"):
        run_sql(_client(service), "SELECT 1", warehouse_id="wh-1")


def test_a_statement_past_its_timeout_is_canceled():
    service = _Service({"statement_id": "s-1", "status": {"state": "RUNNING"}})
    with pytest.raises(SqlError, match=r"statement timed out after -1s and was canceled: SELECT 1"):
        run_sql(_client(service), "SELECT 1", warehouse_id="wh-1", timeout=-1)
    assert service.canceled == ["s-1"]


def test_an_unknown_disposition_is_a_parameter_error():
    service = _Service({})
    with pytest.raises(
        ParameterError, match=r"disposition must be auto, INLINE or EXTERNAL_LINKS, got 'ARROW'"
    ):
        run_sql(_client(service), "SELECT 1", warehouse_id="wh-1", disposition="ARROW")
    assert service.executed == []


def test_external_links_with_no_chunk_give_an_empty_typed_frame():
    manifest = {**MANIFEST, "total_chunk_count": 0}
    service = _Service({"statement_id": "s-1", "status": {"state": "SUCCEEDED"}, "manifest": manifest})
    frame = run_sql(_client(service), "SELECT * FROM orders", warehouse_id="wh-1")
    (call,) = service.executed
    assert call["disposition"].value == "EXTERNAL_LINKS" and call["format"].value == "ARROW_STREAM"
    assert list(frame.columns) == ["order_id", "amount", "order_date"] and len(frame) == 0
    assert [str(t) for t in frame.dtypes] == ["Int64", "object", "datetime64[ns]"]


@pytest.mark.parametrize(
    ("expiration", "expired"),
    [
        (None, False),
        ("", False),
        ("not a date", False),
        ("2000-01-01T00:00:00Z", True),
        ("2999-01-01T00:00:00Z", False),
    ],
)
def test_link_expiration(expiration, expired):
    assert statements._expired(expiration) is expired


def test_a_link_about_to_expire_counts_as_expired():
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat()
    assert statements._expired(soon) is True and statements._expired(later) is False
