"""engine.watermarks' pure parts: how values become stored text, and the calls that need no table.

Round trips through `monitoring.watermarks` (MERGE, one row per pipeline and source) are covered end to
end by the pipeline tests; here `merge_into` is replaced to see the rows `set_watermarks` would write.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.engine import watermarks, writes

# ----------------------------------------------------------------------------- _as_text (pure)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2024-01-05 10:00:00", "2024-01-05 10:00:00"),
        ("  2024-01-05 10:00:00\n", "2024-01-05 10:00:00"),  # stored stripped
        ("v42", "v42"),  # any text is a watermark (versions, file names)
        (dt.datetime(2024, 1, 5, 10, 0), "2024-01-05 10:00:00.000000"),
        (dt.datetime(2024, 1, 5, 10, 0, 0, 1234), "2024-01-05 10:00:00.001234"),
        (dt.datetime(2024, 1, 5, 10, 0, tzinfo=dt.UTC), "2024-01-05 10:00:00.000000"),
        # An aware datetime is stored in UTC, without an offset.
        (
            dt.datetime(2024, 1, 5, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-04 23:30:00.000000",
        ),
        (
            dt.datetime(2024, 1, 5, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "2024-01-06 01:00:00.000000",
        ),
        (dt.date(2024, 2, 29), "2024-02-29"),
    ],
)
def test_values_are_stored_as_text(value, text):
    assert watermarks._as_text(value) == text


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_an_empty_watermark_is_refused(value):
    with pytest.raises(ParameterError, match="a watermark must not be empty") as info:
        watermarks._as_text(value)
    assert info.value.name == "value"


def test_datetimes_as_text_sort_like_the_datetimes():
    """Fixed-width text (microseconds always written): text order is time order, offsets included."""
    plus2 = dt.timezone(dt.timedelta(hours=2))
    values = [
        dt.datetime(2024, 1, 5, 10, 0, 0, 1),
        dt.datetime(2024, 1, 5, 10, 0),
        dt.datetime(2024, 1, 5, 11, 0, tzinfo=plus2),  # 09:00 UTC
        dt.datetime(2023, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 1, 5, 9, 59, 59, 500000),
    ]
    as_utc = [v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v for v in values]
    by_text = sorted(range(len(values)), key=lambda i: watermarks._as_text(values[i]))
    by_time = sorted(range(len(values)), key=lambda i: as_utc[i])
    assert by_text == by_time == [3, 2, 4, 1, 0]
    assert max(values, key=watermarks._as_text) == values[0]


def test_the_engine_reads_a_stored_timestamp_back_exactly(spark):
    """Readers filter with `_ingested_at > CAST(watermark AS timestamp)`: the text must cast back losslessly."""
    value = dt.datetime(2024, 1, 5, 10, 0, 0, 123456)
    df = spark.createDataFrame(
        [(watermarks._as_text(value), watermarks._as_text(dt.date(2024, 2, 29)))], "t string, d string"
    )
    row = df.select(
        F.col("t").cast("timestamp").alias("t"), F.col("d").cast("timestamp").alias("d")
    ).collect()[0]
    assert row.t == value
    assert row.d == dt.datetime(2024, 2, 29)


# ----------------------------------------------------------------------------- calls that need no table


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A LAKEHOUSE_HOME with no tables at all."""
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if the engine is asked for a session."""
    from retail_lakehouse import engine

    def refuse(*_args, **_kwargs):
        raise AssertionError("the engine was used")

    monkeypatch.setattr(engine, "get_spark", refuse)


def test_before_any_watermark_table_every_source_is_none(empty_home, no_engine):  # noqa: ARG001
    got = watermarks.get_watermarks("silver_to_gold", ["silver.orders", "silver.customers"], env="local")
    assert got == {"silver.orders": None, "silver.customers": None}
    assert watermarks.get_watermark("silver", "orders", env="local") is None
    assert not (empty_home / "warehouse").exists()  # reading created nothing


def test_no_sources_asked_is_an_empty_answer(no_engine):  # noqa: ARG001
    assert watermarks.get_watermarks("silver", [], env="local") == {}


def test_setting_no_values_does_nothing(no_engine):  # noqa: ARG001
    assert watermarks.set_watermarks("silver", {}, "run-1", env="local") is None


@pytest.fixture
def merges(monkeypatch):
    """Replace merge_into: record what set_watermarks would MERGE instead of writing it."""
    calls: list[dict] = []

    def record(df, table, **kwargs):
        calls.append(
            {
                "rows": [r.asDict() for r in df.collect()],
                "schema": df.schema.simpleString(),
                "table": table,
                **kwargs,
            }
        )

    monkeypatch.setattr(writes, "merge_into", record)
    return calls


def test_set_watermarks_merges_one_row_per_source_on_pipeline_and_source(spark, merges):  # noqa: ARG001
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    watermarks.set_watermarks(
        "silver_to_gold",
        {
            "silver.orders": dt.datetime(2024, 1, 5, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "silver.customers": " 2024-01-04 00:00:00 ",
            "landing": dt.date(2024, 1, 3),
        },
        "run-7",
        env="local",
        version=12,
    )
    (call,) = merges
    assert call["table"] == watermarks.WATERMARK_TABLE == "monitoring.watermarks"
    assert call["keys"] == ["pipeline", "source"] and call["assume_unique"] is True and call["env"] == "local"
    assert call["schema"] == (
        "struct<pipeline:string,source:string,last_processed_timestamp:string,last_processed_version:bigint,"
        "run_id:string,updated_at:timestamp>"
    )
    rows = {r["source"]: r for r in call["rows"]}
    assert {s: r["last_processed_timestamp"] for s, r in rows.items()} == {
        "silver.orders": "2024-01-05 09:00:00.000000",
        "silver.customers": "2024-01-04 00:00:00",
        "landing": "2024-01-03",
    }
    assert all(r["pipeline"] == "silver_to_gold" and r["run_id"] == "run-7" for r in rows.values())
    assert all(r["last_processed_version"] == 12 for r in rows.values())
    # updated_at is the wall clock of the call (only the value is business time); the session's time
    # zone may shift it by hours.
    assert all(abs(r["updated_at"] - before) < dt.timedelta(days=1) for r in rows.values())


def test_set_watermark_is_set_watermarks_of_one_source(spark, merges):  # noqa: ARG001
    watermarks.set_watermark("bronze", "store_oltp.orders", "2024-01-05 10:00:00", "run-8", env="local")
    (call,) = merges
    (row,) = call["rows"]
    assert (row["pipeline"], row["source"], row["last_processed_timestamp"], row["run_id"]) == (
        "bronze",
        "store_oltp.orders",
        "2024-01-05 10:00:00",
        "run-8",
    )
    assert row["last_processed_version"] is None


def test_an_empty_value_is_refused_before_anything_is_written(spark, merges):  # noqa: ARG001
    with pytest.raises(ParameterError, match="must not be empty"):
        watermarks.set_watermarks("silver", {"orders": "2024-01-05", "customers": " "}, "run-9", env="local")
    assert merges == []
