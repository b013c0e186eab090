"""pipeline.silver's pure core on tiny in-memory frames: rule sets, standardize, evaluate, deduplicate.

`clean_table` (bronze tables in, silver and quarantine tables out) is covered end to end in
tests/integration/test_bronze_silver.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from retail_lakehouse.core.errors import ConfigError, ParameterError
from retail_lakehouse.pipeline import silver
from retail_lakehouse.pipeline.silver import Rule, RuleSet, deduplicate, evaluate, parse_rule_set, standardize


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# ----------------------------------------------------------------------------- rule sets (pure)


def test_every_packaged_rule_set_parses():
    for table in silver.SILVER_TABLES:
        rules = silver.rule_set(table)
        assert rules.table == table
        assert rules.columns and rules.rules
        assert all(r.criticality in ("error", "warn") for r in rules.rules)


def test_packaged_customers_rule_set():
    rules = silver.rule_set("customers")
    assert (rules.source, rules.order_by, rules.date_column) == (
        "bronze.customers",
        ("updated_at", "_ingested_at"),
        None,
    )
    assert [(r.name, r.criticality) for r in rules.rules] == [
        ("customer_id_not_null", "error"),
        ("updated_at_parseable", "error"),
        ("segment_known", "warn"),
        ("email_has_at", "warn"),
    ]
    orders = silver.rule_set("orders")
    assert orders.optional_columns == {"promo_code": "string"}
    assert orders.rules[4] == Rule(
        "store_exists", "error", foreign_key={"column": "store_id", "references": "silver.stores.store_id"}
    )


def test_unknown_table_has_no_rules():
    with pytest.raises(
        ParameterError, match=r"'returns' has no silver rules; use one of customers, products"
    ) as info:
        silver.rule_set("returns")
    assert info.value.name == "table"


def test_parse_rule_set_defaults():
    rules = parse_rule_set(
        {
            "table": "t",
            "source": "bronze.t",
            "columns": {"id": "id"},
            "rules": [{"name": "r", "expression": "id > 0", "criticality": "warn"}],
        },
        "test",
    )
    assert rules == RuleSet(
        table="t",
        source="bronze.t",
        columns={"id": "id"},
        rules=(Rule("r", "warn", "id > 0"),),
        order_by=("_ingested_at",),
    )


def test_parse_rule_set_reports_every_problem_at_once():
    raw = {
        "columns": {"id": "id"},
        "rules": [
            {"name": "a", "expression": "id > 0", "criticality": "error"},
            {"name": "a", "expression": "id < 9", "criticality": "warn"},
            {"expression": "x", "criticality": "fatal"},
            {
                "name": "both",
                "expression": "x",
                "foreign_key": {"column": "id", "references": "silver.t.id"},
                "criticality": "error",
            },
            {"name": "neither", "criticality": "warn"},
            {"name": "fk", "foreign_key": {"column": "id", "references": "t.id"}, "criticality": "error"},
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_rule_set(raw, "rules/x.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "rule set rules/x.yaml has problems:"
    assert [line.strip() for line in lines[1:]] == [
        "missing `table`",
        "missing `source`",
        "rules[1] (a): duplicate rule name",
        "rules[2] (None): missing name",
        "rules[2] (None): criticality must be 'error' or 'warn', not 'fatal'",
        "rules[3] (both): give exactly one of `expression` or `foreign_key`",
        "rules[4] (neither): give exactly one of `expression` or `foreign_key`",
        "rules[5] (fk): foreign_key needs column and references: layer.table.column",
    ]


# ----------------------------------------------------------------------------- standardize

BRONZE = "customer_id bigint, first_name string, email string, segment string, updated_at string, _ingested_at timestamp"
RULES = RuleSet(
    table="customers",
    source="bronze.customers",
    columns={
        "customer_id": "customer_id",
        "first_name": "initcap(trim(first_name))",
        "email": "lower(trim(email))",
        "segment": "lower(trim(segment))",
        "promo": "promo",
        "updated_at": "try_to_timestamp(updated_at, 'yyyy-MM-dd HH:mm:ss')",
    },
    rules=(
        Rule("customer_id_not_null", "error", "customer_id IS NOT NULL"),
        Rule("updated_at_parseable", "error", "updated_at IS NOT NULL"),
        Rule("segment_known", "warn", "segment IN ('regular', 'vip')"),
        Rule("email_has_at", "warn", "email LIKE '%@%'"),
    ),
    order_by=("updated_at", "_ingested_at"),
    optional_columns={"promo": "string"},
)


@pytest.fixture
def bronze(spark):
    i1, i2 = ts("2024-01-05 10:00:00"), ts("2024-01-05 11:00:00")
    return spark.createDataFrame(
        [
            (1, "  ann ", " Ann@X.com ", "VIP ", "2024-01-04 08:00:00", i1),
            (None, "bob", "bob@x", "regular", "2024-01-04 09:00:00", i1),
            (3, "cy", None, "alien", "yesterday", i2),
        ],
        BRONZE,
    )


def test_standardize_computes_the_silver_columns_and_keeps_the_raw_row(bronze):
    std = standardize(bronze, RULES)
    assert std.columns == [*RULES.columns, "_ingested_at", "__raw"]
    rows = {r.first_name: r for r in std.collect()}
    ann = rows["Ann"]
    assert (ann.customer_id, ann.email, ann.segment, ann.promo) == (1, "ann@x.com", "vip", None)
    assert ann.updated_at == ts("2024-01-04 08:00:00")
    assert ann._ingested_at == ts("2024-01-05 10:00:00")
    # The bronze row exactly as landed (quarantine keeps it).
    assert ann["__raw"].asDict() == {
        "customer_id": 1,
        "first_name": "  ann ",
        "email": " Ann@X.com ",
        "segment": "VIP ",
        "updated_at": "2024-01-04 08:00:00",
        "_ingested_at": ts("2024-01-05 10:00:00"),
    }
    assert rows["Cy"].updated_at is None  # unparsable: NULL, for a rule to catch


def test_standardize_uses_an_optional_column_when_the_source_has_it(bronze):
    from pyspark.sql import functions as F

    std = standardize(bronze.withColumn("promo", F.lit("SPRING")), RULES)
    assert {r.promo for r in std.collect()} == {"SPRING"}
    assert "promo" in std.select("__raw.*").columns  # part of the raw row once bronze has it


def test_standardize_types_a_missing_optional_column(bronze):
    std = standardize(bronze, RULES)
    assert dict(std.dtypes)["promo"] == "string"


def test_standardize_looks_values_up_in_reference_frames(spark):
    rules = RuleSet(
        table="order_items",
        source="bronze.order_items",
        columns={"order_item_id": "order_item_id", "order_id": "order_id", "order_date": "order_date"},
        rules=(),
        order_by=("_ingested_at",),
        lookups=(
            {"table": "silver.orders", "key": "order_id", "columns": {"order_date": "order_date"}},
            {"table": "silver.products", "key": "product_id", "columns": {"list_price": "unit_price"}},
        ),
        check_columns={"list_price": "list_price"},
    )
    items = spark.createDataFrame(
        [
            (1, 10, 100, ts("2024-01-05 10:00:00")),
            (2, 11, 101, ts("2024-01-05 10:00:00")),
            (3, None, 100, ts("2024-01-05 10:00:00")),
            (4, 10, 100, ts("2024-01-05 10:00:00")),  # a second line of order 10
        ],
        "order_item_id bigint, order_id bigint, product_id bigint, _ingested_at timestamp",
    )
    orders = spark.createDataFrame(
        [
            (10, dt.date(2024, 1, 5)),
            (10, dt.date(2024, 1, 5)),
            (12, dt.date(2024, 1, 6)),  # no line of it in the day's rows: filtered out before the join
        ],  # a duplicate key in the reference adds no row
        "order_id bigint, order_date date",
    )
    products = spark.createDataFrame([(100, Decimal("2.50"))], "product_id bigint, unit_price decimal(12,2)")
    std = standardize(items, rules, {"silver.orders": orders, "silver.products": products})
    assert std.columns == ["order_item_id", "order_id", "order_date", "list_price", "_ingested_at", "__raw"]
    rows = {r.order_item_id: (r.order_date, r.list_price) for r in std.collect()}
    assert rows == {
        1: (dt.date(2024, 1, 5), Decimal("2.50")),
        2: (None, None),  # no such order or product: NULL, for a rule to catch
        3: (None, Decimal("2.50")),
        4: (dt.date(2024, 1, 5), Decimal("2.50")),
    }
    assert std.count() == 4  # one row per bronze row


# ----------------------------------------------------------------------------- evaluate


def _failures(df) -> dict:
    return {r.first_name: (list(r["__failed_errors"]), list(r["__failed_warnings"])) for r in df.collect()}


def test_evaluate_names_the_failed_rules_by_criticality(bronze):
    checked = evaluate(standardize(bronze, RULES), RULES)
    assert checked.columns[-2:] == ["__failed_errors", "__failed_warnings"]
    assert _failures(checked) == {
        "Ann": ([], []),
        "Bob": (["customer_id_not_null"], []),
        # email NULL: `email LIKE ...` is NULL, and a rule that is not TRUE fails.
        "Cy": (["updated_at_parseable"], ["segment_known", "email_has_at"]),
    }


def test_evaluate_without_rules_gives_empty_arrays(bronze):
    rules = RuleSet(**{**RULES.__dict__, "rules": ()})
    checked = evaluate(standardize(bronze, rules), rules)
    assert {(tuple(r["__failed_errors"]), tuple(r["__failed_warnings"])) for r in checked.collect()} == {
        ((), ())
    }
    assert dict(checked.dtypes)["__failed_errors"] == "array<string>"


def test_evaluate_checks_foreign_keys_against_the_reference(spark):
    rules = RuleSet(
        table="orders",
        source="bronze.orders",
        columns={"order_id": "order_id", "store_id": "store_id"},
        rules=(
            Rule(
                "store_exists",
                "error",
                foreign_key={"column": "store_id", "references": "silver.stores.store_id"},
            ),
            Rule(
                "store_known_warn",
                "warn",
                foreign_key={"column": "store_id", "references": "silver.stores.store_id"},
            ),
        ),
        order_by=("_ingested_at",),
    )
    std = spark.createDataFrame([(1, 7), (2, 8), (3, None)], "order_id bigint, store_id bigint")
    stores = spark.createDataFrame([(7,), (7,), (9,)], "store_id bigint")  # duplicates in the reference
    checked = evaluate(std, rules, {"silver.stores.store_id": stores})
    assert checked.columns == [
        "order_id",
        "store_id",
        "__failed_errors",
        "__failed_warnings",
    ]  # no join columns left
    got = {r.order_id: (list(r["__failed_errors"]), list(r["__failed_warnings"])) for r in checked.collect()}
    assert got == {
        1: ([], []),
        2: (["store_exists"], ["store_known_warn"]),
        3: ([], []),  # a NULL key is not a broken reference (NOT NULL rules catch it)
    }


# ----------------------------------------------------------------------------- deduplicate


def test_deduplicate_keeps_the_latest_row_per_key(spark):
    df = spark.createDataFrame(
        [
            (1, "old", ts("2024-01-01 00:00:00"), ts("2024-01-05 10:00:00")),
            (1, "new", ts("2024-01-02 00:00:00"), ts("2024-01-05 09:00:00")),
            (2, "first landing", ts("2024-01-03 00:00:00"), ts("2024-01-05 09:00:00")),
            (
                2,
                "re-sent later",
                ts("2024-01-03 00:00:00"),
                ts("2024-01-05 11:00:00"),
            ),  # tie: later ingestion
            (3, "dated", ts("2024-01-01 00:00:00"), ts("2024-01-05 09:00:00")),
            (3, "undated", None, ts("2024-01-05 12:00:00")),  # a NULL order value sorts last
            (4, "only", None, None),
        ],
        "customer_id bigint, v string, updated_at timestamp, _ingested_at timestamp",
    )
    out = deduplicate(df, ("customer_id",), ("updated_at", "_ingested_at"))
    assert out.columns == df.columns
    assert {r.customer_id: r.v for r in out.collect()} == {
        1: "new",
        2: "re-sent later",
        3: "dated",
        4: "only",
    }


def test_deduplicate_on_a_composite_key(spark):
    df = spark.createDataFrame(
        [("a", 1, 1), ("a", 1, 3), ("a", 2, 2), ("b", 1, 5)], "k1 string, k2 bigint, seq bigint"
    )
    out = deduplicate(df, ("k1", "k2"), ("seq",))
    assert sorted(tuple(r) for r in out.collect()) == [("a", 1, 3), ("a", 2, 2), ("b", 1, 5)]


def test_standardize_evaluate_deduplicate_reconcile(bronze, spark):
    """bronze rows = valid rows kept + quarantined + duplicates removed, as clean_table records it."""
    from pyspark.sql import functions as F

    extra = spark.createDataFrame(
        [(1, "ann", "ann@x.com", "vip", "2024-01-03 08:00:00", ts("2024-01-05 12:00:00"))], BRONZE
    )
    checked = evaluate(standardize(bronze.unionByName(extra), RULES), RULES)
    valid = checked.filter(F.size("__failed_errors") == 0)
    kept = deduplicate(valid, ("customer_id",), RULES.order_by).collect()
    quarantined = checked.filter(F.size("__failed_errors") > 0).count()
    assert (checked.count(), len(kept), quarantined) == (4, 1, 2)
    assert kept[0].updated_at == ts("2024-01-04 08:00:00")  # the newer update wins over the later landing
