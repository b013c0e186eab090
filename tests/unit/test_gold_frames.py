"""pipeline.gold_frames called directly on tiny frames: SCD2 changes, SCD1 rows, facts and the daily aggregate.

tests/unit/test_gold.py builds the gold tables from silver tables end to end; here every function is a
pure DataFrame -> DataFrame call and nothing is written.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from retail_lakehouse.pipeline import gold_frames as gf


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


DIM = (
    "customer_sk bigint, customer_id bigint, full_name string, email string, address string, city string, "
    "state string, postal_code string, segment string, effective_from timestamp, effective_to timestamp, "
    "is_current boolean, _run_id string"
)
INCOMING = (
    "customer_id bigint, full_name string, email string, address string, city string, state string, "
    "postal_code string, segment string, created_at timestamp, updated_at timestamp"
)
PLACE = ("Springfield", "IL", "62701", "consumer")
V1 = ts("2023-01-01 00:00:00")


def dim_row(sk, cid, address="1 Main", email="a@x", start=V1, end=None, current=True, place=PLACE):
    return (sk, cid, f"N{cid}", email, address, *place, start, end, current, "r0")


def incoming_row(
    cid,
    address="1 Main",
    email="a@x",
    updated="2024-03-01 00:00:00",
    created="2022-12-01 00:00:00",
    place=PLACE,
):
    return (cid, f"N{cid}", email, address, *place, ts(created) if created else None, ts(updated))


def changes(spark, current_rows, incoming_rows, **kwargs) -> dict[tuple[int, str], dict]:
    current = spark.createDataFrame(current_rows, DIM)
    incoming = spark.createDataFrame(incoming_rows, INCOMING)
    out = gf.scd2_changes(current, incoming, run_id="r1", **kwargs)
    return {(r.customer_id, r.change_type): r.asDict() for r in out.collect()}


def xxhash(spark, *values) -> int:
    """xxhash64 of literals as the engine computes it (integers as bigint, the key columns' type)."""
    cols = [F.lit(v).cast("bigint") if isinstance(v, int) else F.lit(v) for v in values]
    return spark.range(1).select(F.xxhash64(*cols)).collect()[0][0]


# ----------------------------------------------------------------------------- scd2_changes


def test_scd2_output_columns(spark):
    current = spark.createDataFrame([dim_row(10, 1)], DIM)
    out = gf.scd2_changes(current, spark.createDataFrame([incoming_row(2)], INCOMING))
    assert out.columns == [
        "customer_sk",
        "customer_id",
        "full_name",
        "email",
        "address",
        "city",
        "state",
        "postal_code",
        "segment",
        "effective_from",
        "effective_to",
        "is_current",
        "_run_id",
        "change_type",
    ]


def test_a_new_member_starts_at_its_creation_with_a_hashed_key(spark):
    got = changes(spark, [dim_row(10, 1)], [incoming_row(2, created="2022-12-01 00:00:00")])
    assert set(got) == {(2, "insert")}
    row = got[(2, "insert")]
    assert (row["effective_from"], row["effective_to"], row["is_current"], row["_run_id"]) == (
        ts("2022-12-01 00:00:00"),
        None,
        True,
        "r1",
    )
    assert row["customer_sk"] == xxhash(spark, "customer", 2, ts("2022-12-01 00:00:00"))


def test_a_new_member_without_created_at_starts_at_its_update(spark):
    got = changes(spark, [], [incoming_row(5, created=None, updated="2024-02-01 12:00:00")])
    assert got[(5, "insert")]["effective_from"] == ts("2024-02-01 12:00:00")


def test_a_tracked_change_closes_the_version_and_opens_a_new_one(spark):
    got = changes(spark, [dim_row(10, 1)], [incoming_row(1, address="9 Oak", email="new@x")])
    assert set(got) == {(1, "close"), (1, "new_version")}
    closed, new = got[(1, "close")], got[(1, "new_version")]
    # The closed version keeps its key, its start and its tracked values; it ends when the new one starts.
    assert (closed["customer_sk"], closed["address"], closed["effective_from"], closed["is_current"]) == (
        10,
        "1 Main",
        V1,
        False,
    )
    assert closed["effective_to"] == new["effective_from"] == ts("2024-03-01 00:00:00")
    assert (new["address"], new["email"], new["is_current"], new["effective_to"]) == (
        "9 Oak",
        "new@x",
        True,
        None,
    )
    assert new["customer_sk"] == xxhash(spark, "customer", 1, ts("2024-03-01 00:00:00"))
    assert new["customer_sk"] != closed["customer_sk"]
    # A type-1 attribute changed along with it is overwritten in the closed version too.
    assert closed["email"] == "new@x"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("address", "2 Elm"),
        ("city", "Shelbyville"),
        ("state", "IN"),
        ("postal_code", "46176"),
        ("segment", "vip"),
    ],
)
def test_every_tracked_attribute_makes_a_new_version(spark, column, value):
    place = dict(zip(("city", "state", "postal_code", "segment"), PLACE, strict=True))
    address = "1 Main"
    if column == "address":
        address = value
    else:
        place[column] = value
    got = changes(spark, [dim_row(10, 1)], [incoming_row(1, address=address, place=tuple(place.values()))])
    assert set(got) == {(1, "close"), (1, "new_version")}
    assert got[(1, "new_version")][column] == value and got[(1, "close")][column] != value


def test_a_type1_change_updates_the_current_version_in_place(spark):
    got = changes(spark, [dim_row(10, 1)], [incoming_row(1, email="b@x")])
    assert set(got) == {(1, "type1")}
    row = got[(1, "type1")]
    assert (
        row["customer_sk"],
        row["email"],
        row["effective_from"],
        row["effective_to"],
        row["is_current"],
    ) == (
        10,
        "b@x",
        V1,
        None,
        True,
    )


def test_unchanged_keys_give_no_rows(spark):
    assert changes(spark, [dim_row(10, 1)], [incoming_row(1)]) == {}
    assert changes(spark, [dim_row(10, 1)], []) == {}


def test_nulls_compare_null_safely(spark):
    # NULL -> NULL is no change; NULL -> value and value -> NULL are changes.
    assert changes(spark, [dim_row(10, 1, email=None)], [incoming_row(1, email=None)]) == {}
    assert set(changes(spark, [dim_row(10, 1, email=None)], [incoming_row(1, email="a@x")])) == {(1, "type1")}
    assert set(changes(spark, [dim_row(10, 1, address="1 Main")], [incoming_row(1, address=None)])) == {
        (1, "close"),
        (1, "new_version"),
    }


def test_a_tracked_change_not_after_the_version_start_is_applied_as_type1_only(spark):
    # The current version starts 2024-03-01; a change stamped earlier cannot be placed in time.
    current = [dim_row(10, 1, start=ts("2024-03-01 00:00:00"))]
    got = changes(
        spark, current, [incoming_row(1, address="9 Oak", email="late@x", updated="2024-02-01 00:00:00")]
    )
    assert set(got) == {(1, "type1")}
    row = got[(1, "type1")]
    assert (row["email"], row["address"]) == ("late@x", "1 Main")  # tracked value kept, type-1 applied
    # Same instant as the start: not after it either; and with no type-1 change nothing happens.
    assert changes(spark, current, [incoming_row(1, address="9 Oak", updated="2024-03-01 00:00:00")]) == {}


def test_only_current_versions_are_compared(spark):
    history = [
        dim_row(10, 1, address="0 Old", end=ts("2023-06-01 00:00:00"), current=False),
        dim_row(11, 1, address="1 Main", start=ts("2023-06-01 00:00:00")),
    ]
    assert changes(spark, history, [incoming_row(1, address="1 Main")]) == {}
    got = changes(spark, history, [incoming_row(1, address="0 Old")])  # moving back is a new version
    assert got[(1, "close")]["customer_sk"] == 11
    assert got[(1, "new_version")]["address"] == "0 Old"


def test_the_same_input_gives_the_same_keys(spark):
    current = [dim_row(10, 1)]
    incoming = [incoming_row(1, address="9 Oak"), incoming_row(2)]
    first, second = changes(spark, current, incoming), changes(spark, current, incoming)
    assert {k: v["customer_sk"] for k, v in first.items()} == {k: v["customer_sk"] for k, v in second.items()}


def test_scd2_for_another_dimension(spark):
    current = spark.createDataFrame(
        [(7, 100, "North", "Ann", V1, None, True, "r0")],
        "store_sk bigint, store_id bigint, region string, manager string, effective_from timestamp, "
        "effective_to timestamp, is_current boolean, _run_id string",
    )
    incoming = spark.createDataFrame(
        [(100, "South", "Ann", V1, ts("2024-01-01 00:00:00")), (101, "East", "Bo", V1, V1)],
        "store_id bigint, region string, manager string, created_at timestamp, updated_at timestamp",
    )
    out = gf.scd2_changes(
        current,
        incoming,
        key="store_id",
        tracked=("region",),
        type1=("manager",),
        sk_column="store_sk",
        sk_prefix="store",
    )
    got = {(r.store_id, r.change_type): r for r in out.collect()}
    assert set(got) == {(100, "close"), (100, "new_version"), (101, "insert")}
    assert got[(101, "insert")].store_sk == xxhash(spark, "store", 101, V1)
    assert out.columns[:4] == ["store_sk", "store_id", "manager", "region"]


# ----------------------------------------------------------------------------- customer_source, scd1_frame, date_key


def test_customer_source_builds_full_name(spark):
    silver = spark.createDataFrame(
        [(1, "Ann", "Lee", "a@x", "1 Main", *PLACE, V1, V1), (2, "Bo", None, None, "2 Main", *PLACE, V1, V1)],
        "customer_id bigint, first_name string, last_name string, email string, address string, city string, "
        "state string, postal_code string, segment string, created_at timestamp, updated_at timestamp",
    )
    out = gf.customer_source(silver)
    assert out.columns == [
        "customer_id",
        "full_name",
        "email",
        *gf.CUSTOMER_TRACKED,
        "created_at",
        "updated_at",
    ]
    assert {r.customer_id: r.full_name for r in out.collect()} == {1: "Ann Lee", 2: "Bo"}


def test_scd1_frame(spark):
    silver = spark.createDataFrame(
        [(1, "SKU1", "Tea", "x"), (2, "SKU2", "Cup", "y")],
        "product_id bigint, sku string, product_name string, extra string",
    )
    out = gf.scd1_frame(
        silver,
        columns=["product_sk", "product_id", "sku", "product_name", "_run_id"],
        key="product_id",
        sk_column="product_sk",
        sk_prefix="product",
        run_id="r9",
    )
    assert out.columns == ["product_sk", "product_id", "sku", "product_name", "_run_id"]
    rows = {r.product_id: r for r in out.collect()}
    assert rows[1].product_sk == xxhash(spark, "product", 1)
    assert (rows[2].sku, rows[2].product_name, rows[2]._run_id) == ("SKU2", "Cup", "r9")
    # The salt keeps keys of different dimensions apart.
    assert rows[1].product_sk != xxhash(spark, "store", 1)


def test_date_key(spark):
    df = spark.createDataFrame([(dt.date(2024, 1, 5),), (None,)], "d date")
    assert [r.k for r in df.select(gf.date_key(F.col("d")).alias("k")).collect()] == [20240105, None]
    stamp = spark.createDataFrame([(ts("2024-12-31 23:59:59"),)], "t timestamp")
    assert stamp.select(gf.date_key(F.col("t"))).collect()[0][0] == 20241231


def test_dim_date_frame_over_a_leap_day(spark):
    rows = gf.dim_date_frame(spark, dt.date(2024, 2, 28), dt.date(2024, 3, 1)).collect()
    assert [(r.date_key, r.day_of_month, r.month, r.day_name) for r in rows] == [
        (20240228, 28, 2, "Wednesday"),
        (20240229, 29, 2, "Thursday"),
        (20240301, 1, 3, "Friday"),
    ]
    assert (dt.date(2023, 1, 1), dt.date(2026, 12, 31)) == gf.CALENDAR


# ----------------------------------------------------------------------------- fact_sales_frame

ORDERS = "order_id bigint, customer_id bigint, store_id bigint, order_ts timestamp, order_date date, channel string"
ITEMS = (
    "order_item_id bigint, order_id bigint, product_id bigint, quantity bigint, unit_price decimal(12,2), "
    "discount decimal(12,2), line_amount decimal(14,2)"
)
DIM_CUSTOMER = "customer_sk bigint, customer_id bigint, effective_from timestamp, effective_to timestamp"
MOVE = ts("2024-01-08 00:00:00")


@pytest.fixture
def dims(spark):
    customers = spark.createDataFrame(
        [
            (101, 1, ts("2023-06-01 00:00:00"), MOVE),  # first version (starts after some orders)
            (102, 1, MOVE, None),  # after the move
            (201, 2, ts("2023-01-01 00:00:00"), None),
        ],
        DIM_CUSTOMER,
    )
    products = spark.createDataFrame([(501, 1), (502, 2)], "product_sk bigint, product_id bigint")
    stores = spark.createDataFrame([(901, 1)], "store_sk bigint, store_id bigint")
    return customers, products, stores


def fact(spark, dims, orders, items, run_id="rf"):
    out = gf.fact_sales_frame(
        spark.createDataFrame(items, ITEMS), spark.createDataFrame(orders, ORDERS), *dims, run_id=run_id
    )
    return out, {r.order_item_id: r.asDict() for r in out.collect()}


def _order(oid, cid, sid, when, date="same", channel="store"):
    t = ts(when)
    return (oid, cid, sid, t, t.date() if date == "same" else date, channel)


def _item(iid, oid, pid, qty=1, price="2.00", discount="0.10", amount="auto"):
    line = (
        (Decimal(qty) * Decimal(price) * (1 - Decimal(discount or 0))).quantize(Decimal("0.01"))
        if amount == "auto"
        else amount
    )
    return (iid, oid, pid, qty, Decimal(price), Decimal(discount) if discount is not None else None, line)


def test_fact_columns(spark, dims):
    out, _ = fact(spark, dims, [_order(1, 2, 1, "2024-01-05 10:00:00")], [_item(11, 1, 1)])
    assert [(c, t) for c, t in out.dtypes] == [
        ("order_item_id", "bigint"),
        ("order_id", "bigint"),
        ("date_key", "int"),
        ("customer_sk", "bigint"),
        ("product_sk", "bigint"),
        ("store_sk", "bigint"),
        ("quantity", "bigint"),
        ("unit_price", "decimal(12,2)"),
        ("discount", "decimal(12,2)"),
        ("net_amount", "decimal(14,2)"),
        ("channel", "string"),
        ("order_ts", "timestamp"),
        ("_run_id", "string"),
    ]


def test_fact_customer_version_as_of_the_order_time(spark, dims):
    orders = [
        _order(1, 1, 1, "2023-01-15 09:00:00"),  # before the first version: the first version
        _order(2, 1, 1, "2024-01-07 23:59:59"),  # last second of the first version
        _order(3, 1, 1, "2024-01-08 00:00:00"),  # the move's instant: the new version
        _order(4, 1, 1, "2024-02-01 00:00:00"),
        _order(5, 2, 1, "2024-01-05 10:00:00"),
    ]
    _, rows = fact(spark, dims, orders, [_item(10 + o, o, 1) for o in range(1, 6)])
    assert {r["order_id"]: r["customer_sk"] for r in rows.values()} == {
        1: 101,
        2: 101,
        3: 102,
        4: 102,
        5: 201,
    }


def test_fact_unresolved_keys_are_the_unknown_member(spark, dims):
    orders = [_order(1, 99, 42, "2024-01-05 10:00:00"), _order(2, None, 1, "2024-01-05 10:00:00")]
    _, rows = fact(spark, dims, orders, [_item(11, 1, 77), _item(12, 2, None)])
    assert (rows[11]["customer_sk"], rows[11]["product_sk"], rows[11]["store_sk"]) == (-1, -1, -1)
    assert (rows[12]["customer_sk"], rows[12]["product_sk"], rows[12]["store_sk"]) == (-1, -1, 901)
    assert gf.UNKNOWN_SK == -1


def test_fact_leaves_out_lines_without_their_order(spark, dims):
    _, rows = fact(
        spark, dims, [_order(1, 2, 1, "2024-01-05 10:00:00")], [_item(11, 1, 1), _item(12, 404, 1)]
    )
    assert set(rows) == {11}


def test_fact_net_amount_is_the_line_amount_or_computed(spark, dims):
    items = [
        _item(11, 1, 1, qty=2, price="2.00", discount="0.10"),  # line_amount 3.60 given
        _item(
            12, 1, 1, qty=3, price="1.99", discount="0.15", amount=None
        ),  # 3 * 1.99 * 0.85 = 5.0745 -> 5.07
        _item(13, 1, 2, qty=1, price="5.00", discount=None, amount=None),  # no discount: none taken
        _item(14, 1, 2, qty=1, price="5.00", discount="0.00", amount=Decimal("4.50")),  # silver's amount wins
    ]
    _, rows = fact(spark, dims, [_order(1, 2, 1, "2024-01-05 10:00:00")], items)
    assert {k: r["net_amount"] for k, r in rows.items()} == {
        11: Decimal("3.60"),
        12: Decimal("5.07"),
        13: Decimal("5.00"),
        14: Decimal("4.50"),
    }
    assert rows[13]["discount"] is None


def test_fact_date_key_from_the_order_date_or_its_timestamp(spark, dims):
    orders = [
        _order(1, 2, 1, "2024-01-05 23:30:00"),
        _order(2, 2, 1, "2024-01-06 10:00:00", date=None),
        _order(3, 2, 1, "2024-01-06 10:00:00", date=dt.date(2024, 1, 7)),  # the order's business date wins
    ]
    _, rows = fact(spark, dims, orders, [_item(11, 1, 1), _item(12, 2, 1), _item(13, 3, 1)])
    assert {k: r["date_key"] for k, r in rows.items()} == {11: 20240105, 12: 20240106, 13: 20240107}
    assert {r["channel"] for r in rows.values()} == {"store"} and {r["_run_id"] for r in rows.values()} == {
        "rf"
    }


# ----------------------------------------------------------------------------- daily_sales_frame


def test_daily_sales_aggregates_per_day_and_store(spark):
    fact_rows = spark.createDataFrame(
        [
            (20240105, 901, 1, 201, 2, Decimal("3.60")),
            (20240105, 901, 1, 201, 1, Decimal("1.00")),  # second line of the same order
            (20240105, 901, 2, 102, 3, Decimal("5.00")),
            (20240105, -1, 3, -1, 1, Decimal("2.00")),  # the unknown store is a store of its own
            (20240106, 901, 4, 201, None, None),
        ],
        "date_key int, store_sk bigint, order_id bigint, customer_sk bigint, quantity bigint, net_amount decimal(14,2)",
    )
    out = gf.daily_sales_frame(fact_rows, run_id="ra")
    assert dict(out.dtypes) == {
        "date_key": "int",
        "store_sk": "bigint",
        "orders": "bigint",
        "order_lines": "bigint",
        "units": "bigint",
        "net_amount": "decimal(18,2)",
        "customers": "bigint",
        "_run_id": "string",
    }
    got = {
        (r.date_key, r.store_sk): (r.orders, r.order_lines, r.units, r.net_amount, r.customers)
        for r in out.collect()
    }
    assert got == {
        (20240105, 901): (2, 3, 6, Decimal("9.60"), 2),
        (20240105, -1): (1, 1, 1, Decimal("2.00"), 1),
        (20240106, 901): (1, 1, 0, Decimal("0.00"), 1),  # all-NULL sums are 0, not NULL
    }
    assert {r._run_id for r in out.collect()} == {"ra"}
