"""The gold tables as pure DataFrame transformations: SCD2 changes for customers, SCD1 frames for
products and stores, the date dimension, sales facts with surrogate keys as of the order date, and
the daily aggregate. `retail_lakehouse.pipeline.gold` reads silver, calls these and writes gold.

Surrogate keys are hashes of the natural key (and, for SCD2, the version start), so re-runs,
incremental loads and full rebuilds give the same keys; a key that does not resolve becomes the
unknown member, -1, never NULL.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from retail_lakehouse.engine import spark_functions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import Column, DataFrame

__all__ = [
    "CALENDAR",
    "CUSTOMER_TRACKED",
    "CUSTOMER_TYPE1",
    "UNKNOWN_SK",
    "customer_as_of",
    "customer_source",
    "daily_sales_frame",
    "date_key",
    "dim_date_frame",
    "fact_sales_frame",
    "scd1_frame",
    "scd2_changes",
    "timestamp_literal",
]

UNKNOWN_SK = -1
FAR_FUTURE = "9999-12-31 00:00:00"
BEFORE_TIME = "1900-01-01 00:00:00"
CALENDAR = (dt.date(2023, 1, 1), dt.date(2026, 12, 31))
CUSTOMER_TRACKED: tuple[str, ...] = ("address", "city", "state", "postal_code", "segment")
CUSTOMER_TYPE1: tuple[str, ...] = ("full_name", "email")


def timestamp_literal(text: str) -> Column:
    """A timestamp literal column from 'YYYY-MM-DD HH:MM:SS' text."""
    return spark_functions().lit(text).cast("timestamp")


def _differs(a: Column, b: Column) -> Column:
    return ~a.eqNullSafe(b)


def customer_source(silver_customers: DataFrame) -> DataFrame:
    """Silver customers in dim_customer's vocabulary (full_name built from first and last name)."""
    F = spark_functions()
    return silver_customers.select(
        "customer_id",
        F.trim(F.concat_ws(" ", "first_name", "last_name")).alias("full_name"),
        "email",
        *CUSTOMER_TRACKED,
        "created_at",
        "updated_at",
    )


def scd2_changes(
    current: DataFrame,
    incoming: DataFrame,
    *,
    key: str = "customer_id",
    tracked: Sequence[str] = CUSTOMER_TRACKED,
    type1: Sequence[str] = CUSTOMER_TYPE1,
    sk_column: str = "customer_sk",
    sk_prefix: str = "customer",
    run_id: str = "",
) -> DataFrame:
    """Rows to MERGE (on `sk_column`) into an SCD2 dimension for the incoming latest states.

    Args:
        current: the dimension (all rows or only current ones; only ``is_current`` rows are used).
        incoming: one row per key: `key`, `tracked`, `type1`, ``created_at``, ``updated_at``.
        key: natural key column.
        tracked: type-2 attributes: a change closes the current version and opens a new one.
        type1: type-1 attributes: a change updates the current version in place.
        sk_column: surrogate key column; ``xxhash64(sk_prefix, key, effective_from)``.
        sk_prefix: hash salt per dimension.
        run_id: written to ``_run_id``.

    Returns:
        The dimension's columns plus ``change_type``: ``insert`` (new member, effective from
        ``created_at``), ``close`` (current version ended at the incoming ``updated_at``),
        ``new_version`` (effective from ``updated_at``) or ``type1``. An unchanged key gives no row, so
        applying the same input twice changes nothing. A tracked change whose ``updated_at`` is not
        after the current version's start cannot be placed in time and is applied as type 1 only.
    """
    F = spark_functions()
    attrs = [*type1, *tracked]
    cur = current.filter(F.col("is_current")).select(
        F.col(key).alias("_c_key"),
        F.col(sk_column).alias("_c_sk"),
        F.col("effective_from").alias("_c_from"),
        *[F.col(c).alias(f"_c_{c}") for c in attrs],
    )
    joined = incoming.join(cur, incoming[key] == cur["_c_key"], "left")
    is_new = F.col("_c_sk").isNull()
    tracked_changed = F.lit(False)
    for c in tracked:
        tracked_changed = tracked_changed | _differs(F.col(c), F.col(f"_c_{c}"))
    type1_changed = F.lit(False)
    for c in type1:
        type1_changed = type1_changed | _differs(F.col(c), F.col(f"_c_{c}"))
    versioned = ~is_new & tracked_changed & (F.col("updated_at") > F.col("_c_from"))
    in_place = ~is_new & ~versioned & type1_changed

    def sk(start: Column) -> Column:
        return F.xxhash64(F.lit(sk_prefix), F.col(key), start)

    def shape(
        frame: DataFrame,
        sk_col: Column,
        start: Column,
        end: Column,
        current_flag: bool,
        values: dict[str, Column],
        change: str,
    ) -> DataFrame:
        return frame.select(
            sk_col.alias(sk_column),
            F.col(key),
            *[values.get(c, F.col(c)).alias(c) for c in attrs],
            start.cast("timestamp").alias("effective_from"),
            end.cast("timestamp").alias("effective_to"),
            F.lit(current_flag).alias("is_current"),
            F.lit(run_id).alias("_run_id"),
            F.lit(change).alias("change_type"),
        )

    first_start = F.coalesce(F.col("created_at"), F.col("updated_at"))
    no_end = F.lit(None).cast("timestamp")
    old = {c: F.col(f"_c_{c}") for c in tracked}
    inserts = shape(joined.filter(is_new), sk(first_start), first_start, no_end, True, {}, "insert")
    closes = shape(
        joined.filter(versioned), F.col("_c_sk"), F.col("_c_from"), F.col("updated_at"), False, old, "close"
    )
    versions = shape(
        joined.filter(versioned),
        sk(F.col("updated_at")),
        F.col("updated_at"),
        no_end,
        True,
        {},
        "new_version",
    )
    updates = shape(joined.filter(in_place), F.col("_c_sk"), F.col("_c_from"), no_end, True, old, "type1")
    return inserts.unionByName(closes).unionByName(versions).unionByName(updates)


def scd1_frame(
    silver: DataFrame, *, columns: Sequence[str], key: str, sk_column: str, sk_prefix: str, run_id: str
) -> DataFrame:
    """Latest silver state as SCD1 dimension rows: ``sk = xxhash64(sk_prefix, key)`` plus `columns`."""
    F = spark_functions()
    rest = [c for c in columns if c not in (sk_column, "_run_id")]
    return silver.select(
        F.xxhash64(F.lit(sk_prefix), F.col(key)).alias(sk_column),
        *[F.col(c) for c in rest],
        F.lit(run_id).alias("_run_id"),
    )


def dim_date_frame(spark: Any, start: dt.date = CALENDAR[0], end: dt.date = CALENDAR[1]) -> DataFrame:
    """A calendar from `start` to `end` inclusive; ``date_key`` = yyyymmdd, ``day_of_week`` 1 = Sunday."""
    F = spark_functions()
    days = spark.sql(
        f"SELECT explode(sequence(DATE'{start.isoformat()}', DATE'{end.isoformat()}', INTERVAL 1 DAY)) AS date"
    )
    d = F.col("date")
    return days.select(
        F.date_format(d, "yyyyMMdd").cast("int").alias("date_key"),
        d,
        F.year(d).alias("year"),
        F.quarter(d).alias("quarter"),
        F.month(d).alias("month"),
        F.date_format(d, "MMMM").alias("month_name"),
        F.dayofmonth(d).alias("day_of_month"),
        F.dayofweek(d).alias("day_of_week"),
        F.date_format(d, "EEEE").alias("day_name"),
        F.weekofyear(d).alias("week_of_year"),
        F.dayofweek(d).isin(1, 7).alias("is_weekend"),
    )


def date_key(column: Column) -> Column:
    """yyyymmdd int of a date column."""
    return spark_functions().date_format(column, "yyyyMMdd").cast("int")


def customer_as_of(
    frame: DataFrame, dim_customer: DataFrame, *, customer_col: str, ts_col: str = "order_ts"
) -> DataFrame:
    """`frame` plus ``_d_customer_sk``: the customer version valid at `ts_col` (NULL when none)."""
    from pyspark.sql import Window

    F = spark_functions()
    first = Window.partitionBy("customer_id")
    cust = dim_customer.select(
        F.col("customer_id").alias("_d_customer_id"),
        F.col("customer_sk").alias("_d_customer_sk"),
        F.when(F.col("effective_from") == F.min("effective_from").over(first), timestamp_literal(BEFORE_TIME))
        .otherwise(F.col("effective_from"))
        .alias("_d_from"),
        F.coalesce(F.col("effective_to"), timestamp_literal(FAR_FUTURE)).alias("_d_to"),
    )
    joined = frame.join(
        cust,
        (frame[customer_col] == cust["_d_customer_id"])
        & (frame[ts_col] >= cust["_d_from"])
        & (frame[ts_col] < cust["_d_to"]),
        "left",
    )
    return joined.drop("_d_customer_id", "_d_from", "_d_to")


def fact_sales_frame(
    items: DataFrame,
    orders: DataFrame,
    dim_customer: DataFrame,
    dim_product: DataFrame,
    dim_store: DataFrame,
    *,
    run_id: str = "",
) -> DataFrame:
    """Order lines with surrogate keys: customer as of the order time, product and store by natural key.

    Lines whose order is not in `orders` are left out. The customer version is the one with
    ``effective_from <= order_ts < effective_to``; an order before a customer's first version takes the
    first version. Unresolved keys become -1. ``net_amount`` is silver's ``line_amount``, or
    ``quantity * unit_price * (1 - discount)`` (discount is a fraction) when that is missing.
    """
    F = spark_functions()
    o = orders.select(
        F.col("order_id").alias("_o_order_id"),
        F.col("customer_id").alias("_o_customer_id"),
        F.col("store_id").alias("_o_store_id"),
        "order_ts",
        F.coalesce(F.col("order_date"), F.to_date("order_ts")).alias("_o_date"),
        "channel",
    )
    lines = items.join(o, items["order_id"] == o["_o_order_id"], "inner")
    lines = customer_as_of(lines, dim_customer, customer_col="_o_customer_id")
    prod = dim_product.select(F.col("product_id").alias("_p_id"), F.col("product_sk").alias("_p_sk"))
    lines = lines.join(prod, lines["product_id"] == prod["_p_id"], "left")
    store = dim_store.select(F.col("store_id").alias("_s_id"), F.col("store_sk").alias("_s_sk"))
    lines = lines.join(store, lines["_o_store_id"] == store["_s_id"], "left")
    unknown = F.lit(UNKNOWN_SK).cast("bigint")
    computed = F.round(
        F.col("quantity") * F.col("unit_price") * (F.lit(1) - F.coalesce("discount", F.lit(0))), 2
    )
    return lines.select(
        F.col("order_item_id").cast("bigint"),
        F.col("order_id").cast("bigint"),
        date_key(F.col("_o_date")).alias("date_key"),
        F.coalesce(F.col("_d_customer_sk"), unknown).alias("customer_sk"),
        F.coalesce(F.col("_p_sk"), unknown).alias("product_sk"),
        F.coalesce(F.col("_s_sk"), unknown).alias("store_sk"),
        F.col("quantity").cast("bigint"),
        F.col("unit_price").cast("decimal(12,2)"),
        F.col("discount").cast("decimal(12,2)"),
        F.coalesce(F.col("line_amount"), computed).cast("decimal(14,2)").alias("net_amount"),
        "channel",
        "order_ts",
        F.lit(run_id).alias("_run_id"),
    )


def daily_sales_frame(fact: DataFrame, *, run_id: str = "") -> DataFrame:
    """Daily sales per store from fact rows: orders, lines, units, net amount, distinct customers."""
    F = spark_functions()
    return fact.groupBy("date_key", "store_sk").agg(
        F.countDistinct("order_id").cast("bigint").alias("orders"),
        F.count(F.lit(1)).cast("bigint").alias("order_lines"),
        F.coalesce(F.sum("quantity"), F.lit(0)).cast("bigint").alias("units"),
        F.coalesce(F.sum("net_amount"), F.lit(0)).cast("decimal(18,2)").alias("net_amount"),
        F.countDistinct("customer_sk").cast("bigint").alias("customers"),
        F.lit(run_id).alias("_run_id"),
    )
