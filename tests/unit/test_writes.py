"""engine.writes' schema checks without writing tables: `_castable`, `conform`, argument checks, helpers.

Writes to Delta tables (evolution applied, nothing written on refusal) are in
tests/integration/test_writes.py; here the checks run on in-memory frames and plain Python.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from retail_lakehouse.core.errors import SchemaMismatchError, SqlError
from retail_lakehouse.core.tables import TableDef
from retail_lakehouse.engine import writes

FULL = "retail_datalake.local_monitoring.ops_audit"
TABLE = {
    "audit_id": "string",
    "attempt": "int",
    "amount": "decimal(12,2)",
    "at": "timestamp",
    "ok": "boolean",
}


def _schema(df) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]


# ----------------------------------------------------------------------------- _castable (pure)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("string", "string"),
        ("STRING", "string"),  # case does not matter
        ("integer", "int"),  # Spark's two spellings of int
        ("void", "bigint"),  # an all-NULL column fits anything
        ("null", "date"),
        ("tinyint", "smallint"),
        ("smallint", "int"),
        ("int", "bigint"),
        ("float", "double"),
        ("int", "double"),
        ("tinyint", "float"),
        ("smallint", "float"),  # 16 bits fit float's 24-bit significand
        ("integer", "double"),
        ("tinyint", "decimal(3,0)"),
        ("smallint", "decimal(5,0)"),
        ("int", "decimal(10,0)"),
        ("int", "decimal(12,2)"),
        ("bigint", "decimal(20,0)"),
        ("decimal(10,2)", "decimal(12,2)"),
        ("decimal(10,2)", "decimal(11,3)"),  # 8 integer digits either way, one more fraction digit
        ("decimal(10, 2)", "decimal(10,2)"),  # a space after the comma
        ("decimal(12,2)", "double"),
        ("decimal(15,4)", "double"),  # 15 significant digits come back from a double as written
        ("date", "timestamp"),
        ("timestamp_ntz", "timestamp"),
    ],
)
def test_lossless_conversions_are_accepted(source, target):
    assert writes._castable(source, target) is True


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("bigint", "int"),  # narrowing
        ("int", "smallint"),
        ("smallint", "tinyint"),
        ("double", "float"),
        ("double", "bigint"),
        ("float", "int"),
        ("string", "boolean"),
        ("string", "int"),
        ("int", "string"),  # only listed widenings pass, even when the text would be exact
        ("boolean", "int"),
        ("timestamp", "date"),  # drops the time of day
        ("timestamp", "timestamp_ntz"),
        ("smallint", "decimal(4,0)"),  # 32767 needs 5 digits
        ("int", "decimal(9,0)"),
        ("int", "decimal(10,1)"),  # 9 integer digits left for 10
        ("bigint", "decimal(19,0)"),
        ("decimal(12,2)", "decimal(10,2)"),  # fewer integer digits
        ("decimal(12,3)", "decimal(14,2)"),  # fewer fraction digits
        ("double", "decimal(38,18)"),
        ("decimal(12,2)", "bigint"),
        ("decimal(12,2)", "float"),
        ("date", "string"),
    ],
)
def test_lossy_conversions_are_refused(source, target):
    assert writes._castable(source, target) is False


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("int", "float"),  # 16777217 -> 16777216.0
        ("bigint", "float"),
        ("bigint", "double"),  # 2**53 + 1
        ("decimal(38,18)", "double"),
        ("decimal(16,0)", "double"),  # 16 digits: more than a double keeps
    ],
)
def test_conversion_to_floating_point_that_loses_digits_is_refused(source, target):
    assert writes._castable(source, target) is False


# ----------------------------------------------------------------------------- conform (in-memory frames)


@pytest.fixture
def audit(spark):
    return spark.createDataFrame(
        [("a1", 2, 3, dt.date(2024, 1, 5), True)],
        "audit_id string, attempt tinyint, amount int, at date, ok boolean",
    )


def test_conform_returns_the_table_order_and_types(audit):
    out, extra = writes.conform(
        audit.select("ok", "at", "amount", "attempt", "audit_id"), FULL, TABLE, evolve_schema=False
    )
    assert extra == {}
    assert _schema(out) == list(TABLE.items())
    row = out.collect()[0]
    assert row.asDict() == {
        "audit_id": "a1",
        "attempt": 2,
        "amount": 3,
        "at": dt.datetime(2024, 1, 5),
        "ok": True,
    }


def test_conform_fills_columns_the_frame_lacks_with_typed_nulls(spark):
    df = spark.createDataFrame([("a2",)], "audit_id string")
    out, extra = writes.conform(df, FULL, TABLE, evolve_schema=False)
    assert extra == {}
    assert _schema(out) == list(TABLE.items())
    assert out.collect()[0].asDict() == {
        "audit_id": "a2",
        "attempt": None,
        "amount": None,
        "at": None,
        "ok": None,
    }


def test_conform_matches_column_names_case_insensitively_and_uses_the_tables(spark):
    df = spark.createDataFrame([("a3", 7)], "AUDIT_ID string, Attempt int")
    out, extra = writes.conform(df, FULL, TABLE, evolve_schema=False)
    assert extra == {}
    assert out.columns == list(TABLE)
    row = out.collect()[0]
    assert (row.audit_id, row.attempt) == ("a3", 7)


def test_conform_refuses_a_column_the_table_lacks(audit):
    df = audit.withColumn("ticket", F.lit("INC-1")).withColumn("score", F.lit(1.5))
    with pytest.raises(SchemaMismatchError) as info:
        writes.conform(df, FULL, TABLE, evolve_schema=False)
    message = str(info.value)
    assert info.value.table == FULL
    assert "the table lacks: ticket string, score double" in message
    assert "Nothing was written" in message and "evolve_schema=True" in message


def test_conform_with_evolution_keeps_the_extra_columns_at_the_end(audit):
    df = audit.withColumn("ticket", F.lit("INC-1")).withColumn("score", F.lit(1.5))
    out, extra = writes.conform(df, FULL, TABLE, evolve_schema=True)
    assert extra == {"ticket": "string", "score": "double"}
    assert _schema(out) == [*TABLE.items(), ("ticket", "string"), ("score", "double")]
    row = out.collect()[0]
    assert (row.audit_id, row.ticket, row.score) == ("a1", "INC-1", 1.5)


def test_conform_refuses_a_lossy_type_and_lists_every_one(spark):
    df = spark.createDataFrame(
        [("a4", 1, "1.5", "yes")], "audit_id string, attempt bigint, amount string, ok string"
    )
    with pytest.raises(SchemaMismatchError) as info:
        writes.conform(df, FULL, TABLE, evolve_schema=False)
    message = str(info.value)
    assert info.value.table == FULL
    assert "attempt: bigint -> int; amount: string -> decimal(12,2); ok: string -> boolean" in message
    assert "Nothing was written" in message


def test_conform_checks_types_even_when_evolution_is_asked_for(spark):
    df = spark.createDataFrame([("a5", 1.5, "x")], "audit_id string, attempt double, ticket string")
    with pytest.raises(SchemaMismatchError, match=r"attempt: double -> int"):
        writes.conform(df, FULL, TABLE, evolve_schema=True)


def test_conform_compares_types_of_case_insensitive_matches(spark):
    df = spark.createDataFrame([("a6", "x")], "audit_id string, OK string")
    with pytest.raises(SchemaMismatchError, match=r"OK: string -> boolean"):
        writes.conform(df, FULL, TABLE, evolve_schema=False)


# ----------------------------------------------------------------------------- argument checks (before any I/O)


def test_write_table_refuses_an_unknown_mode_before_touching_anything():
    # The frame is never looked at: the mode is checked first.
    with pytest.raises(SqlError, match=r"write mode 'upsert' is not supported; use 'append' or 'overwrite'"):
        writes.write_table(None, "monitoring.ops_audit", mode="upsert")


def test_write_table_refuses_replace_where_without_overwrite():
    with pytest.raises(SqlError, match=r"replace_where needs mode='overwrite'"):
        writes.write_table(None, "monitoring.ops_audit", mode="append", replace_where="env = 'local'")


def test_merge_into_a_table_without_keys_asks_for_them():
    keyless = TableDef(name="scratch", layer="monitoring", columns={"a": "int"})
    with pytest.raises(SqlError, match=r"merge into monitoring.scratch: the table has no keys; pass keys="):
        writes.merge_into(None, keyless)


def test_table_def_passes_a_table_def_through_and_looks_names_up():
    keyless = TableDef(name="scratch", layer="monitoring", columns={"a": "int"})
    assert writes.table_def(keyless) is keyless
    assert writes.table_def("orders", layer="silver").ref == "silver.orders"
    assert writes.table_def("silver.orders").ref == "silver.orders"


# ----------------------------------------------------------------------------- partition literals (pure)


@pytest.mark.parametrize(
    ("value", "spark_type", "literal"),
    [
        (None, "date", "NULL"),
        (dt.date(2024, 1, 5), "date", "DATE'2024-01-05'"),
        (42, "bigint", "42"),
        (7, "INTEGER", "7"),
        ("north", "string", "'north'"),
        ("O'Brien\\x", "string", "'O\\'Brien\\\\x'"),  # quotes and backslashes escaped
        ("2024-01-05", "date", None),  # a value of another type: no predicate rather than a wrong one
        (1.5, "double", None),
        ("7", "bigint", None),
    ],
)
def test_partition_literal(value, spark_type, literal):
    assert writes._partition_literal(value, spark_type) == literal


# ----------------------------------------------------------------------------- conflict retries


class _Flaky:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


@pytest.fixture
def sleeps(monkeypatch):
    import time

    waited: list[float] = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


def test_a_commit_conflict_is_retried_until_it_succeeds(sleeps):
    action = _Flaky(
        [RuntimeError("concurrent commit detected"), RuntimeError("Commit failed: version exists")]
    )
    writes._with_conflict_retry(action)
    assert action.calls == 3
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] < 0.15 and 0.2 <= sleeps[1] < 0.25  # 0.05 * 2**n + jitter


def test_other_errors_are_not_retried(sleeps):
    action = _Flaky([ValueError("column x not found")])
    with pytest.raises(ValueError, match="column x not found"):
        writes._with_conflict_retry(action)
    assert action.calls == 1 and sleeps == []


def test_a_conflict_that_persists_is_raised_after_the_last_attempt(sleeps):
    action = _Flaky([RuntimeError(f"commit conflict {i}") for i in range(10)])
    with pytest.raises(RuntimeError, match="commit conflict 2"):
        writes._with_conflict_retry(action, attempts=3)
    assert action.calls == 3 and len(sleeps) == 2
