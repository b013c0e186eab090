"""Silver -> gold on tiny tables: SCD2/SCD1 dimensions, as-of fact keys, incremental = full rebuild."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal

import pytest

from retail_lakehouse import engine
from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.engine import watermarks, writes
from retail_lakehouse.pipeline import gold, gold_frames

UTC = dt.UTC


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


T1, T2 = ts("2024-02-01 00:00:00"), ts("2024-02-02 00:00:00")

CUSTOMERS = (
    "customer_id bigint, first_name string, last_name string, email string, phone string, address string, "
    "city string, state string, postal_code string, segment string, created_at timestamp, updated_at timestamp, "
    "_run_id string, _processed_at timestamp"
)
PRODUCTS = (
    "product_id bigint, sku string, product_name string, category string, subcategory string, brand string, "
    "unit_price decimal(12,2), unit_cost decimal(12,2), is_active boolean, created_at timestamp, "
    "updated_at timestamp, _run_id string, _processed_at timestamp"
)
STORES = (
    "store_id bigint, store_code string, store_name string, city string, state string, region string, "
    "store_type string, opened_date date, updated_at timestamp, _run_id string, _processed_at timestamp"
)
ORDERS = (
    "order_id bigint, customer_id bigint, store_id bigint, order_ts timestamp, order_date date, status string, "
    "channel string, total_amount decimal(12,2), promo_code string, updated_at timestamp, _run_id string, "
    "_processed_at timestamp"
)
ITEMS = (
    "order_item_id bigint, order_id bigint, product_id bigint, quantity bigint, unit_price decimal(12,2), "
    "discount decimal(12,2), line_amount decimal(14,2), order_date date, updated_at timestamp, _run_id string, "
    "_processed_at timestamp"
)


def customer(cid, address, email, updated, processed, segment="consumer"):
    return (
        cid,
        f"F{cid}",
        f"L{cid}",
        email,
        None,
        address,
        "Springfield",
        "IL",
        "62701",
        segment,
        ts("2022-12-01 00:00:00"),
        ts(updated),
        "r",
        processed,
    )


def order(oid, cid, sid, when, processed):
    t = ts(when)
    return (oid, cid, sid, t, t.date(), "completed", "store", Decimal("10.00"), None, t, "r", processed)


def item(iid, oid, pid, qty, price, when, processed, discount="0.10"):
    amount = (Decimal(qty) * Decimal(price) * (1 - Decimal(discount))).quantize(Decimal("0.01"))
    return (
        iid,
        oid,
        pid,
        qty,
        Decimal(price),
        Decimal(discount),
        amount,
        ts(when).date(),
        ts(when),
        "r",
        processed,
    )


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEHOUSE_HOME", str(tmp_path_factory.mktemp("gold_home")))
        mp.delenv("SPARK_REMOTE", raising=False)
        mp.setenv("LAKEHOUSE_ENV", "local")
        yield engine.get_spark()
        engine.stop_local_server()


def _rows(spark, table: str, order_by: str) -> list[dict]:
    full = f"retail_datalake.local_gold.{table}"
    return [r.asDict() for r in spark.table(full).orderBy(*order_by.split(",")).collect()]


def _write(spark, rows, ddl, table, mode="overwrite"):
    df = spark.createDataFrame(rows, ddl)
    if mode == "merge":
        writes.merge_into(df, table)
    else:
        writes.write_table(df, table, mode="overwrite")


def _fact_tuples(rows) -> set[tuple]:
    return {tuple(v for k, v in r.items() if k != "_run_id") for r in rows}


# ----------------------------------------------------------------------------- pure cores


def test_scd2_changes_pure(spark):
    dim_cols = (
        "customer_sk bigint, customer_id bigint, full_name string, email string, address string, city string, "
        "state string, postal_code string, segment string, effective_from timestamp, effective_to timestamp, "
        "is_current boolean, _run_id string"
    )
    base = ("Springfield", "IL", "62701", "consumer")
    current = spark.createDataFrame(
        [
            (10, 1, "A A", "a@x", "1 Main", *base, ts("2023-01-01 00:00:00"), None, True, "r0"),
            (20, 2, "B B", "b@x", "2 Main", *base, ts("2023-01-01 00:00:00"), None, True, "r0"),
            (30, 3, "C C", "c@x", "3 Main", *base, ts("2023-01-01 00:00:00"), None, True, "r0"),
        ],
        dim_cols,
    )
    incoming_cols = (
        "customer_id bigint, full_name string, email string, address string, city string, state string, "
        "postal_code string, segment string, created_at timestamp, updated_at timestamp"
    )
    incoming = spark.createDataFrame(
        [
            (1, "A A", "a@x", "9 Oak", *base, ts("2022-12-01 00:00:00"), ts("2024-03-01 00:00:00")),  # moved
            (
                2,
                "B B",
                "new@x",
                "2 Main",
                *base,
                ts("2022-12-01 00:00:00"),
                ts("2024-03-01 00:00:00"),
            ),  # type 1
            (3, "C C", "c@x", "3 Main", *base, ts("2022-12-01 00:00:00"), ts("2024-03-01 00:00:00")),  # same
            (4, "D D", "d@x", "4 Main", *base, ts("2022-12-01 00:00:00"), ts("2022-12-01 00:00:00")),  # new
        ],
        incoming_cols,
    )
    changes = {
        (r.customer_id, r.change_type): r for r in gold_frames.scd2_changes(current, incoming, run_id="r1").collect()
    }
    assert set(changes) == {(1, "close"), (1, "new_version"), (2, "type1"), (4, "insert")}
    closed = changes[(1, "close")]
    assert closed.customer_sk == 10 and closed.address == "1 Main" and not closed.is_current
    assert closed.effective_to == changes[(1, "new_version")].effective_from
    assert changes[(1, "new_version")].address == "9 Oak" and changes[(1, "new_version")].is_current
    assert changes[(2, "type1")].customer_sk == 20 and changes[(2, "type1")].email == "new@x"
    assert changes[(4, "insert")].effective_from == dt.datetime(2022, 12, 1)
    assert changes[(4, "insert")].effective_to is None


def test_dim_date_frame_calendar(spark):
    rows = gold_frames.dim_date_frame(spark, dt.date(2024, 3, 1), dt.date(2024, 3, 3)).collect()
    assert [r.date_key for r in rows] == [20240301, 20240302, 20240303]
    first = rows[0]
    assert (first.day_name, first.month_name, first.quarter, first.is_weekend) == (
        "Friday",
        "March",
        1,
        False,
    )
    assert rows[1].is_weekend and rows[1].day_of_week == 7


# ----------------------------------------------------------------------------- end to end on tiny silver


@pytest.fixture(scope="module")
def loaded(spark):
    """Run 1: silver as of T1, every gold table built from scratch."""
    _write(
        spark,
        [
            customer(1, "1 Main", "a@x", "2022-12-01 00:00:00", T1),
            customer(2, "2 Main", "b@x", "2022-12-01 00:00:00", T1),
            customer(3, "3 Main", "c@x", "2022-12-01 00:00:00", T1),
        ],
        CUSTOMERS,
        "silver.customers",
    )
    _write(
        spark,
        [
            (
                1,
                "SKU1",
                "Tea",
                "food",
                "drinks",
                "b",
                Decimal("2.00"),
                Decimal("1.00"),
                True,
                ts("2022-12-01 00:00:00"),
                ts("2022-12-01 00:00:00"),
                "r",
                T1,
            ),
            (
                2,
                "SKU2",
                "Cup",
                "home",
                "kitchen",
                "b",
                Decimal("5.00"),
                Decimal("2.00"),
                True,
                ts("2022-12-01 00:00:00"),
                ts("2022-12-01 00:00:00"),
                "r",
                T1,
            ),
        ],
        PRODUCTS,
        "silver.products",
    )
    _write(
        spark,
        [
            (
                1,
                "S1",
                "Downtown",
                "Springfield",
                "IL",
                "midwest",
                "mall",
                dt.date(2020, 1, 1),
                ts("2022-12-01 00:00:00"),
                "r",
                T1,
            )
        ],
        STORES,
        "silver.stores",
    )
    _write(
        spark,
        [
            order(101, 1, 1, "2024-01-05 10:00:00", T1),  # c1 before the move
            order(102, 2, 1, "2024-01-06 11:00:00", T1),
            order(106, 1, 1, "2024-01-09 12:00:00", T1),  # c1 after the move, the move arrives late
            order(104, 99, 99, "2024-01-06 12:00:00", T1),
        ],  # unknown customer and store
        ORDERS,
        "silver.orders",
    )
    _write(
        spark,
        [
            item(1001, 101, 1, 2, "2.00", "2024-01-05 10:00:00", T1),
            item(1002, 102, 2, 1, "5.00", "2024-01-06 11:00:00", T1),
            item(1003, 104, 99, 3, "1.00", "2024-01-06 12:00:00", T1),  # unknown product
            item(1006, 106, 1, 1, "2.00", "2024-01-09 12:00:00", T1),
        ],
        ITEMS,
        "silver.order_items",
    )
    results = {
        "dim_date": gold.build_dim_date("run1"),
        "dim_customer": gold.build_dim_customer("run1"),
        "dim_product": gold.build_dim_product("run1"),
        "dim_store": gold.build_dim_store("run1"),
        "fact_sales": gold.build_fact_sales("run1"),
    }
    results["agg"] = gold.build_agg_daily_sales("run1")
    return results


@pytest.fixture(scope="module")
def second_run(spark, loaded):
    """Run 2 at T2: c1 moved on 2024-01-08 (late), c2 changed email only, c3 re-sent unchanged,
    product 1 repriced, a late line for an old order and a new order after the move."""
    _write(
        spark,
        [
            customer(1, "9 Oak", "a@x", "2024-01-08 00:00:00", T2),
            customer(2, "2 Main", "b2@x", "2024-01-07 00:00:00", T2),
            customer(3, "3 Main", "c@x", "2022-12-01 00:00:00", T2),
        ],
        CUSTOMERS,
        "silver.customers",
        "merge",
    )
    _write(
        spark,
        [
            (
                1,
                "SKU1",
                "Tea",
                "food",
                "drinks",
                "b",
                Decimal("2.20"),
                Decimal("1.00"),
                True,
                ts("2022-12-01 00:00:00"),
                ts("2024-01-08 00:00:00"),
                "r",
                T2,
            )
        ],
        PRODUCTS,
        "silver.products",
        "merge",
    )
    _write(spark, [order(107, 1, 1, "2024-01-10 09:00:00", T2)], ORDERS, "silver.orders", "merge")
    _write(
        spark,
        [
            item(1007, 107, 2, 4, "5.00", "2024-01-10 09:00:00", T2),
            item(1008, 101, 2, 1, "5.00", "2024-01-05 10:00:00", T2),
        ],  # late line of an old order
        ITEMS,
        "silver.order_items",
        "merge",
    )
    results = {
        "dim_customer": gold.build_dim_customer("run2"),
        "dim_product": gold.build_dim_product("run2"),
        "dim_store": gold.build_dim_store("run2"),
        "fact_sales": gold.build_fact_sales("run2"),
    }
    results["agg"] = gold.build_agg_daily_sales("run2", date_keys=results["fact_sales"].date_keys)
    return results


def test_first_load_counts(loaded, spark):
    assert loaded["dim_date"].inserted == 1461
    assert gold.build_dim_date("again").mode == "skipped"
    assert loaded["dim_customer"].inserted == 3 and loaded["dim_customer"].closed == 0
    assert loaded["fact_sales"].mode == "full" and loaded["fact_sales"].inserted == 4
    dims = _rows(spark, "dim_customer", "customer_id")
    assert all(r["is_current"] and r["effective_from"] == dt.datetime(2022, 12, 1) for r in dims)


def test_unknown_keys_are_minus_one(loaded, spark):
    fact = {r["order_item_id"]: r for r in _rows(spark, "fact_sales", "order_item_id")}
    assert fact[1003]["customer_sk"] == -1 and fact[1003]["store_sk"] == -1 and fact[1003]["product_sk"] == -1
    assert fact[1001]["customer_sk"] != -1 and fact[1001]["product_sk"] != -1
    assert all(r[c] is not None for r in fact.values() for c in ("customer_sk", "product_sk", "store_sk"))
    assert fact[1001]["net_amount"] == Decimal("3.60")  # 2 x 2.00 x (1 - 0.10)


def test_scd2_invariants_after_changes(second_run, spark):
    result = second_run["dim_customer"]
    assert (result.closed, result.updated, result.extra["new_versions"], result.extra["new_members"]) == (
        1,
        1,
        1,
        0,
    )
    dims = _rows(spark, "dim_customer", "customer_id,effective_from")
    current = Counter(r["customer_id"] for r in dims if r["is_current"])
    assert current == {1: 1, 2: 1, 3: 1}
    by_customer = defaultdict(list)
    for r in dims:
        by_customer[r["customer_id"]].append(r)
    for versions in by_customer.values():
        for a, b in zip(versions, versions[1:], strict=False):
            assert a["effective_to"] is not None and a["effective_to"] <= b["effective_from"]  # no overlap
    c1 = by_customer[1]
    assert [v["address"] for v in c1] == ["1 Main", "9 Oak"]
    assert c1[0]["effective_to"] == c1[1]["effective_from"] == dt.datetime(2024, 1, 8)
    assert len(by_customer[2]) == 1 and by_customer[2][0]["email"] == "b2@x"  # type 1: no new version
    assert len(by_customer[3]) == 1


def test_scd2_rerun_is_idempotent(second_run, spark):
    before = _rows(spark, "dim_customer", "customer_sk")
    assert gold.build_dim_customer("run3").mode == "skipped"
    # Replaying the same silver rows (watermark reset) changes nothing either.
    watermarks.set_watermark("gold.dim_customer", "silver.customers", "2000-01-01 00:00:00", "reset")
    replay = gold.build_dim_customer("run3")
    assert (replay.inserted, replay.updated, replay.closed) == (0, 0, 0)
    assert _rows(spark, "dim_customer", "customer_sk") == before


def test_scd1_updates_in_place(second_run, spark):
    assert second_run["dim_product"].updated == 1 and second_run["dim_product"].inserted == 0
    products = {r["product_id"]: r for r in _rows(spark, "dim_product", "product_id")}
    assert len(products) == 2 and products[1]["unit_price"] == Decimal("2.20")
    assert second_run["dim_store"].mode == "skipped"


def test_fact_keys_resolved_as_of_order_time(second_run, spark):
    dims = {
        (r["customer_id"], r["address"]): r["customer_sk"]
        for r in _rows(spark, "dim_customer", "customer_sk")
    }
    fact = {r["order_item_id"]: r for r in _rows(spark, "fact_sales", "order_item_id")}
    old_sk, new_sk = dims[(1, "1 Main")], dims[(1, "9 Oak")]
    assert old_sk != new_sk
    assert fact[1001]["customer_sk"] == old_sk  # 2024-01-05, before the move
    assert fact[1008]["customer_sk"] == old_sk  # late line of that order
    assert fact[1006]["customer_sk"] == new_sk  # 2024-01-09: re-resolved after the late move
    assert fact[1007]["customer_sk"] == new_sk


def test_incremental_fact_equals_full_rebuild(second_run, spark):
    assert second_run["fact_sales"].mode == "incremental"
    # late line (01-05), re-resolved customer (01-09), new order (01-10); 01-06 untouched
    assert second_run["fact_sales"].date_keys == (20240105, 20240109, 20240110)
    incremental = _fact_tuples(_rows(spark, "fact_sales", "order_item_id"))
    rebuilt = gold.build_fact_sales("full", start_date="2023-01-01", end_date="2026-12-31")
    assert rebuilt.mode == "backfill" and rebuilt.inserted == 6
    assert _fact_tuples(_rows(spark, "fact_sales", "order_item_id")) == incremental


def test_agg_matches_fact(second_run, spark):
    gold.build_agg_daily_sales("full", start_date="2024-01-01", end_date="2024-01-31")
    fact = _rows(spark, "fact_sales", "order_item_id")
    expected = defaultdict(
        lambda: {"orders": set(), "order_lines": 0, "units": 0, "net": Decimal(0), "cust": set()}
    )
    for r in fact:
        e = expected[(r["date_key"], r["store_sk"])]
        e["orders"].add(r["order_id"])
        e["order_lines"] += 1
        e["units"] += r["quantity"]
        e["net"] += r["net_amount"]
        e["cust"].add(r["customer_sk"])
    agg = {(r["date_key"], r["store_sk"]): r for r in _rows(spark, "agg_daily_sales", "date_key,store_sk")}
    assert set(agg) == set(expected)
    for k, e in expected.items():
        a = agg[k]
        assert (a["orders"], a["order_lines"], a["units"], a["net_amount"], a["customers"]) == (
            len(e["orders"]),
            e["order_lines"],
            e["units"],
            e["net"],
            len(e["cust"]),
        )


def test_incremental_agg_rebuilds_touched_dates(second_run, spark):
    assert second_run["agg"].mode == "incremental"
    assert second_run["agg"].date_keys == (20240105, 20240109, 20240110)


def test_backfill_rejects_bad_dates(loaded):
    with pytest.raises(ParameterError, match="YYYY-MM-DD"):
        gold.build_fact_sales("x", start_date="01/05/2024")
    with pytest.raises(ParameterError, match="after"):
        gold.build_fact_sales("x", start_date="2024-02-01", end_date="2024-01-01")


def test_incremental_fact_follows_moved_and_undated_orders(second_run, spark):
    """Run 3: order 107 moves from 01-10 to 01-12; order 108 has no order_date (its date is its time's).
    The incremental build reads only the touched dates' orders and still equals a full rebuild."""
    t3 = ts("2024-02-03 00:00:00")
    undated = (108, 2, 1, ts("2024-01-13 10:00:00"), None, "completed", "store", Decimal("5.00"), None,
               ts("2024-01-13 10:00:00"), "r", t3)  # fmt: skip
    _write(spark, [order(107, 1, 1, "2024-01-12 09:00:00", t3), undated], ORDERS, "silver.orders", "merge")
    _write(spark, [item(1009, 108, 2, 1, "5.00", "2024-01-13 10:00:00", t3)], ITEMS, "silver.order_items", "merge")
    result = gold.build_fact_sales("run3")
    assert result.mode == "incremental"
    assert result.date_keys == (20240110, 20240112, 20240113)  # the moved order's old and new date
    rows = _rows(spark, "fact_sales", "order_item_id")
    assert {r["order_item_id"]: r["date_key"] for r in rows if r["order_id"] in (107, 108)} == {
        1007: 20240112,
        1009: 20240113,
    }
    incremental = _fact_tuples(rows)
    rebuilt = gold.build_fact_sales("full", start_date="2023-01-01", end_date="2026-12-31")
    assert rebuilt.inserted == 7
    assert _fact_tuples(_rows(spark, "fact_sales", "order_item_id")) == incremental


def test_orders_on_dates_in_list_and_range(spark, monkeypatch):
    """The orders of some fact dates: by order_date, or the order time's date when it is NULL; beyond
    _MAX_IN_LIST dates as the range between the first and the last (as `_partition_filter`)."""
    orders = spark.createDataFrame(
        [
            (1, ts("2024-01-05 10:00:00"), dt.date(2024, 1, 5)),
            (2, ts("2024-01-06 10:00:00"), None),
            (3, ts("2024-01-07 10:00:00"), dt.date(2024, 1, 7)),
            (4, ts("2024-01-09 10:00:00"), dt.date(2024, 1, 9)),
        ],
        "order_id bigint, order_ts timestamp, order_date date",
    )
    keys = [20240105, 20240106, 20240108]
    assert sorted(r.order_id for r in gold._orders_on(orders, keys).collect()) == [1, 2]
    monkeypatch.setattr(gold, "_MAX_IN_LIST", 2)
    assert sorted(r.order_id for r in gold._orders_on(orders, keys).collect()) == [1, 2, 3]  # 01-05..01-08
