"""Silver -> gold: the dimensional model (SCD2 customers, SCD1 products/stores, dates, sales facts).

The pure cores (`scd2_changes`, `scd1_frame`, `dim_date_frame`, `fact_sales_frame`, `daily_sales_frame`,
in `retail_lakehouse.pipeline.gold_frames`) take and return DataFrames; the `build_*` functions here read
silver, call them and write gold through
`retail_lakehouse.engine.writes`. Surrogate keys are hashes of the natural key (and, for SCD2, the version start),
so re-runs, incremental loads and full rebuilds give the same keys. A key that does not resolve becomes
the unknown member, -1, never NULL.

Incremental state is a watermark per (gold table, silver source) on `_processed_at`
(`retail_lakehouse.engine.watermarks`); fact partitions touched since it are rebuilt whole from silver, so an
incremental run equals a full rebuild.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import Settings, load_settings
from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.core.tables import full_name
from retail_lakehouse.engine import spark_functions
from retail_lakehouse.pipeline.gold_frames import (
    CALENDAR,
    UNKNOWN_SK,
    customer_as_of,
    customer_source,
    daily_sales_frame,
    date_key,
    dim_date_frame,
    fact_sales_frame,
    scd1_frame,
    scd2_changes,
    timestamp_literal,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import DataFrame

__all__ = [
    "SOURCES",
    "BuildResult",
    "build_agg_daily_sales",
    "build_dim_customer",
    "build_dim_date",
    "build_dim_product",
    "build_dim_store",
    "build_fact_sales",
]

# What each build reads: the lineage the restore and rebuild runbooks follow (`ops._delta.lineage`).
# A test holds the builds to it: every table a build reads is listed here.
SOURCES: dict[str, tuple[str, ...]] = {
    "gold.dim_date": (),
    "gold.dim_customer": ("silver.customers",),
    "gold.dim_product": ("silver.products",),
    "gold.dim_store": ("silver.stores",),
    "gold.fact_sales": (
        "silver.order_items", "silver.orders", "silver.customers",
        "gold.dim_customer", "gold.dim_product", "gold.dim_store",
    ),
    "gold.agg_daily_sales": ("gold.fact_sales",),
}  # fmt: skip

# Above this many partitions a replaceWhere uses a date_key range instead of an IN list.
_MAX_IN_LIST = 200


@dataclass(frozen=True)
class BuildResult:
    """What a gold build did, for the notebook to show.

    Attributes:
        table: full name of the gold table.
        mode: ``full``, ``incremental``, ``backfill`` or ``skipped``.
        rows_read: silver rows considered.
        inserted: rows added (new members / new versions / fact rows written).
        updated: rows updated in place (SCD1, type-1 attributes).
        closed: SCD2 versions closed.
        date_keys: fact/aggregate partitions rewritten.
        watermark: the watermark stored after the build (None: not moved).
        details: free text (why it was skipped, ...).
    """

    table: str
    mode: str
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    closed: int = 0
    date_keys: tuple[int, ...] = ()
    watermark: str | None = None
    details: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["date_keys"] = (
            f"{len(self.date_keys)} partition(s)" if len(self.date_keys) > 10 else list(self.date_keys)
        )
        return out


# ----------------------------------------------------------------------------- I/O helpers


def _exists(full: str, settings: Settings) -> bool:
    from retail_lakehouse import engine

    if settings.is_local:
        return (engine.table_dir(full, settings) / "_delta_log").is_dir()
    return engine.get_spark(settings.env).catalog.tableExists(full)


def _read(ref: str, settings: Settings) -> DataFrame:
    """A registered table, or an empty frame of its schema when it does not exist yet."""
    from retail_lakehouse import engine
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.engine import writes

    spark = engine.get_spark(settings.env)
    tdef = registry().get(ref, settings=settings)
    full = tdef.full_name(settings)
    if not _exists(full, settings):
        return spark.createDataFrame([], tdef.ddl())
    writes.ensure_table(tdef, env=settings.env)  # registers it in this session if another one wrote it
    return spark.table(full)


def _max_text_and_count(df: DataFrame, column: str) -> tuple[str | None, int]:
    """The newest `column` value as text (None when no rows) and the row count, in one query."""
    F = spark_functions()
    row = df.select(
        F.date_format(F.max(column), "yyyy-MM-dd HH:mm:ss.SSSSSS").alias("m"), F.count(F.lit(1)).alias("n")
    ).collect()[0]
    return row["m"], int(row["n"])


def _max_texts(frames: dict[str, DataFrame], column: str) -> dict[str, str | None]:
    """The newest `column` value of several frames as text, in one query (single-row aggregates, cross-joined)."""
    F = spark_functions()
    names = list(frames)
    joined = None
    for i, name in enumerate(names):
        agg = frames[name].select(
            F.date_format(F.max(column), "yyyy-MM-dd HH:mm:ss.SSSSSS").alias(f"m{i}")
        )
        joined = agg if joined is None else joined.crossJoin(agg)
    if joined is None:
        return {}
    row = joined.collect()[0]
    return {name: row[f"m{i}"] for i, name in enumerate(names)}


def _since(df: DataFrame, watermark: str | None, column: str = "_processed_at") -> DataFrame:
    return df if watermark is None else df.filter(spark_functions().col(column) > timestamp_literal(watermark))




def _partition_filter(keys: Sequence[int]) -> str:
    """A replaceWhere predicate covering exactly `keys` (a range beyond _MAX_IN_LIST keys)."""
    if len(keys) > _MAX_IN_LIST:
        return f"date_key BETWEEN {min(keys)} AND {max(keys)}"
    return f"date_key IN ({', '.join(str(k) for k in keys)})"


def _orders_on(orders: DataFrame, keys: Sequence[int]) -> DataFrame:
    """The orders whose fact date (`order_date`, else the order time's date) is one of `keys`.

    The fact rows of those dates come from these orders only: building them from these reads a few
    partitions of silver.orders and joins the lines with a small side (sf 10, four dates: 420-610 ->
    340-380 ms). The frame is still filtered by `_partition_filter`, so the rows are the same.
    """
    F = spark_functions()
    dates = [dt.date(k // 10000, k // 100 % 100, k % 100) for k in keys]

    def on(day: Any) -> Any:  # as `_partition_filter`: a range beyond _MAX_IN_LIST dates
        if len(dates) > _MAX_IN_LIST:
            return day.between(F.lit(min(dates)), F.lit(max(dates)))
        return day.isin([F.lit(d) for d in dates])

    return orders.filter(on(F.col("order_date")) | (F.col("order_date").isNull() & on(F.to_date("order_ts"))))


def _date_range(start_date: str | dt.date | None, end_date: str | dt.date | None) -> tuple[dt.date, dt.date]:
    def parse(name: str, value: str | dt.date | None) -> dt.date | None:
        if value is None or isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ParameterError(name, f"{value!r} is not a date; use YYYY-MM-DD") from None

    start, end = parse("start_date", start_date), parse("end_date", end_date)
    if start is None and end is None:
        raise ParameterError("start_date", "give start_date and/or end_date for a backfill")
    start, end = start or end, end or start
    assert start is not None and end is not None
    if start > end:
        raise ParameterError("start_date", f"start_date {start} is after end_date {end}")
    return start, end


def _pipeline(table: str) -> str:
    return f"gold.{table}"


# ----------------------------------------------------------------------------- dimensions


def build_dim_date(run_id: str, *, env: str | None = None) -> BuildResult:
    """Write the fixed calendar 2023-01-01..2026-12-31 once (rewritten only when its range differs).

    Args:
        run_id: the pipeline run.
        env: environment.
    """
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes

    F = spark_functions()
    settings = load_settings(env)
    full = full_name("gold.dim_date", settings)
    frame = dim_date_frame(engine.get_spark(settings.env))
    expected = (
        (CALENDAR[1] - CALENDAR[0]).days + 1,
        int(CALENDAR[0].strftime("%Y%m%d")),
        int(CALENDAR[1].strftime("%Y%m%d")),
    )
    if _exists(full, settings):
        row = (
            _read("gold.dim_date", settings)
            .agg(F.count(F.lit(1)), F.min("date_key"), F.max("date_key"))
            .collect()[0]
        )
        if tuple(row) == expected:
            return BuildResult(full, "skipped", details="calendar already complete")
    writes.write_table(frame, "gold.dim_date", mode="overwrite", env=settings.env)
    return BuildResult(full, "full", inserted=expected[0], details=f"run {run_id}")


def build_dim_customer(run_id: str, *, env: str | None = None) -> BuildResult:
    """SCD2 load of customers changed in silver since the watermark.

    Args:
        run_id: the pipeline run.
        env: environment.

    Returns:
        Counts of new members (``inserted`` includes new versions), closed versions and type-1 updates.
    """
    from retail_lakehouse.engine import writes
    from retail_lakehouse.engine.watermarks import get_watermark, set_watermark

    settings = load_settings(env)
    full = full_name("gold.dim_customer", settings)
    pipeline, source = _pipeline("dim_customer"), "silver.customers"
    watermark = get_watermark(pipeline, source, env=settings.env)
    incoming = _since(_read(source, settings), watermark)
    new_mark, rows_read = _max_text_and_count(incoming, "_processed_at")
    if new_mark is None:
        return BuildResult(
            full, "skipped", watermark=watermark, details="no silver changes since the watermark"
        )
    changes = scd2_changes(_read("gold.dim_customer", settings), customer_source(incoming), run_id=run_id)
    # Materialize: the MERGE must not read the dimension it is rewriting through a lazy plan.
    rows = changes.collect()
    counts = {
        kind: sum(1 for r in rows if r["change_type"] == kind)
        for kind in ("insert", "close", "new_version", "type1")
    }
    if rows:
        spark = changes.sparkSession
        frame = spark.createDataFrame(rows, schema=changes.schema).drop("change_type")
        # The rows are here already: check their keys are unique in Python, not with another query.
        unique = len({r["customer_sk"] for r in rows}) == len(rows)
        writes.merge_into(
            frame, "gold.dim_customer", keys=["customer_sk"], assume_unique=unique, env=settings.env
        )
    set_watermark(pipeline, source, new_mark, run_id, env=settings.env)
    return BuildResult(
        full,
        "full" if watermark is None else "incremental",
        rows_read=rows_read,
        inserted=counts["insert"] + counts["new_version"],
        updated=counts["type1"],
        closed=counts["close"],
        watermark=new_mark,
        extra={"new_members": counts["insert"], "new_versions": counts["new_version"]},
    )


_PRODUCT_COLUMNS = (
    "product_id",
    "sku",
    "product_name",
    "category",
    "subcategory",
    "brand",
    "unit_price",
    "unit_cost",
    "is_active",
    "updated_at",
)
_STORE_COLUMNS = (
    "store_id",
    "store_code",
    "store_name",
    "city",
    "state",
    "region",
    "store_type",
    "opened_date",
    "updated_at",
)


def _build_scd1(
    run_id: str,
    table: str,
    source: str,
    columns: Sequence[str],
    key: str,
    sk_column: str,
    prefix: str,
    env: str | None,
) -> BuildResult:
    from retail_lakehouse.engine import writes
    from retail_lakehouse.engine.watermarks import get_watermark, set_watermark

    F = spark_functions()
    settings = load_settings(env)
    full = full_name(f"gold.{table}", settings)
    pipeline = _pipeline(table)
    watermark = get_watermark(pipeline, source, env=settings.env)
    incoming = _since(_read(source, settings), watermark)
    # One query: the new watermark and the insert/update split (scd1_frame is a select of `incoming`,
    # so its rows and keys are incoming's).
    existing = _read(f"gold.{table}", settings).select(F.col(key).alias("_k"))
    stats = (
        incoming.join(existing, incoming[key] == existing["_k"], "left")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count("_k").alias("matched"),
            F.date_format(F.max("_processed_at"), "yyyy-MM-dd HH:mm:ss.SSSSSS").alias("m"),
        )
        .collect()[0]
    )
    new_mark = stats["m"]
    if new_mark is None:
        return BuildResult(
            full, "skipped", watermark=watermark, details="no silver changes since the watermark"
        )
    frame = scd1_frame(
        incoming, columns=columns, key=key, sk_column=sk_column, sk_prefix=prefix, run_id=run_id
    )
    writes.merge_into(frame, f"gold.{table}", keys=[sk_column], env=settings.env)
    set_watermark(pipeline, source, new_mark, run_id, env=settings.env)
    return BuildResult(
        full,
        "full" if watermark is None else "incremental",
        rows_read=stats["n"],
        inserted=stats["n"] - stats["matched"],
        updated=stats["matched"],
        watermark=new_mark,
    )


def build_dim_product(run_id: str, *, env: str | None = None) -> BuildResult:
    """SCD1 MERGE of products changed in silver since the watermark (key ``xxhash64('product', id)``)."""
    return _build_scd1(
        run_id, "dim_product", "silver.products", _PRODUCT_COLUMNS, "product_id", "product_sk", "product", env
    )


def build_dim_store(run_id: str, *, env: str | None = None) -> BuildResult:
    """SCD1 MERGE of stores changed in silver since the watermark (key ``xxhash64('store', id)``)."""
    return _build_scd1(
        run_id, "dim_store", "silver.stores", _STORE_COLUMNS, "store_id", "store_sk", "store", env
    )


# ----------------------------------------------------------------------------- facts


def _touched_date_keys(settings: Settings, marks: dict[str, str | None]) -> list[int]:
    """Order dates whose fact rows may differ from silver since the watermarks.

    New or changed order lines and orders (late-arriving lines touch old dates); the old date of an order
    that moved; orders of customers whose current version started at or before them (a version opened by
    a late SCD2 change re-resolves later orders).
    """
    F = spark_functions()
    items = _read("silver.order_items", settings)
    orders = _read("silver.orders", settings)
    new_items = _since(items, marks["silver.order_items"])
    new_orders = _since(orders, marks["silver.orders"])
    # The three kinds of dates below are collected in one query, as yyyymmdd keys.
    dates = new_items.select(date_key(F.col("order_date")).alias("k")).unionByName(
        new_orders.select(date_key(F.col("order_date")).alias("k"))
    )
    touched_ids = new_items.select("order_id").unionByName(new_orders.select("order_id")).distinct()
    fact = _read("gold.fact_sales", settings)
    moved = fact.join(touched_ids, "order_id", "left_semi").select(F.col("date_key").cast("int").alias("k"))
    # Customers changed since the watermark: dates whose stored customer_sk is no longer the as-of version.
    customers = _since(_read("silver.customers", settings), marks["silver.customers"]).select("customer_id")
    their_orders = orders.join(customers, "customer_id", "left_semi").select(
        "order_id", "customer_id", "order_ts", "order_date"
    )
    resolved = customer_as_of(their_orders, _read("gold.dim_customer", settings), customer_col="customer_id")
    # Only those orders' fact rows (a semi join first: the distinct then works on a few rows, not all).
    stored = (
        fact.join(their_orders.select("order_id"), "order_id", "left_semi")
        .select(F.col("order_id").alias("_f_order_id"), F.col("customer_sk").alias("_f_sk"))
        .distinct()
    )
    stale = resolved.join(stored, resolved["order_id"] == stored["_f_order_id"], "inner").filter(
        F.coalesce(F.col("_d_customer_sk"), F.lit(UNKNOWN_SK)) != F.col("_f_sk")
    )
    stale_dates = stale.select(date_key(F.col("order_date")).alias("k"))
    rows = dates.unionByName(moved).unionByName(stale_dates).distinct().collect()
    return sorted({int(r["k"]) for r in rows if r["k"] is not None})


def build_fact_sales(
    run_id: str,
    *,
    start_date: str | dt.date | None = None,
    end_date: str | dt.date | None = None,
    env: str | None = None,
) -> BuildResult:
    """Rebuild the fact_sales partitions touched since the watermark, or a date range (backfill).

    Without dates: the first run rebuilds the whole table; later runs rewrite exactly the order dates
    with new or changed silver lines/orders (and dates whose customer keys a late SCD2 change moved), each
    partition whole from silver, with `replaceWhere`. With `start_date`/`end_date`: that range is rebuilt
    and the watermark is left alone. Build the dimensions first.

    Args:
        run_id: the pipeline run.
        start_date: first order date to rebuild (backfill), ``YYYY-MM-DD``.
        end_date: last order date to rebuild (inclusive); defaults to `start_date`.
        env: environment.

    Raises:
        ParameterError: malformed or reversed dates.
    """
    from retail_lakehouse import engine
    from retail_lakehouse.engine import writes
    from retail_lakehouse.engine.watermarks import get_watermarks, set_watermarks

    settings = load_settings(env)
    full = full_name("gold.fact_sales", settings)
    pipeline = _pipeline("fact_sales")
    sources = ("silver.order_items", "silver.orders", "silver.customers")
    items = _read("silver.order_items", settings)
    orders = _read("silver.orders", settings)
    dims = [_read(d, settings) for d in ("gold.dim_customer", "gold.dim_product", "gold.dim_store")]
    frame = fact_sales_frame(items, orders, *dims, run_id=run_id)
    if start_date is not None or end_date is not None:
        start, end = _date_range(start_date, end_date)
        lo, hi = int(start.strftime("%Y%m%d")), int(end.strftime("%Y%m%d"))
        predicate = f"date_key BETWEEN {lo} AND {hi}"
        part = frame.filter(predicate)
        written = part.count()
        writes.write_table(
            part, "gold.fact_sales", mode="overwrite", replace_where=predicate, env=settings.env
        )
        keys = tuple(int(d.strftime("%Y%m%d")) for d in _days(start, end))
        return BuildResult(full, "backfill", rows_read=written, inserted=written, date_keys=keys)

    marks = get_watermarks(pipeline, sources, env=settings.env)
    # Read the new marks first: rows landing during the build are simply read again next time.
    new_marks = _max_texts({s: _read(s, settings) for s in sources}, "_processed_at")
    first_run = not _exists(full, settings) or all(marks[s] is None for s in sources[:2])
    if first_run:
        written = frame.count()
        writes.write_table(frame, "gold.fact_sales", mode="overwrite", env=settings.env)
        keys = tuple(r["date_key"] for r in frame.select("date_key").distinct().orderBy("date_key").collect())
        mode = "full"
    else:
        keys = tuple(_touched_date_keys(settings, marks))
        written = 0
        if keys:
            predicate = _partition_filter(keys)
            frame = fact_sales_frame(items, _orders_on(orders, keys), *dims, run_id=run_id)
            # Computed once on the server: the count and the write read the same rows.
            part = engine.local_checkpoint(frame.filter(predicate))
            written = part.count()
            writes.write_table(
                part, "gold.fact_sales", mode="overwrite", replace_where=predicate, env=settings.env
            )
        mode = "incremental"
    set_watermarks(pipeline, {s: new_marks[s] for s in sources if new_marks[s] is not None}, run_id,
                   env=settings.env)
    return BuildResult(
        full,
        mode,
        rows_read=written,
        inserted=written,
        date_keys=keys,
        watermark=new_marks["silver.order_items"],
    )


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def build_agg_daily_sales(
    run_id: str,
    *,
    start_date: str | dt.date | None = None,
    end_date: str | dt.date | None = None,
    date_keys: Sequence[int] | None = None,
    env: str | None = None,
) -> BuildResult:
    """Rebuild agg_daily_sales from fact_sales for the partitions the fact build rewrote.

    Partitions: `start_date`..`end_date` when given; else `date_keys` (pass ``build_fact_sales(...).date_keys``);
    else the dates of fact rows written by `run_id`; everything when the aggregate does not exist yet.

    Args:
        run_id: the pipeline run (also the run whose fact rows are aggregated by default).
        start_date: first date to rebuild (backfill).
        end_date: last date to rebuild (inclusive).
        date_keys: yyyymmdd partitions to rebuild.
        env: environment.
    """
    from retail_lakehouse.engine import writes

    F = spark_functions()
    settings = load_settings(env)
    full = full_name("gold.agg_daily_sales", settings)
    fact = _read("gold.fact_sales", settings)
    if start_date is not None or end_date is not None:
        start, end = _date_range(start_date, end_date)
        predicate = f"date_key BETWEEN {int(start.strftime('%Y%m%d'))} AND {int(end.strftime('%Y%m%d'))}"
        keys: tuple[int, ...] = tuple(int(d.strftime("%Y%m%d")) for d in _days(start, end))
        mode = "backfill"
    elif not _exists(full, settings):
        predicate, mode = None, "full"
        keys = tuple(r["date_key"] for r in fact.select("date_key").distinct().orderBy("date_key").collect())
    else:
        if date_keys is None:
            rows = fact.filter(F.col("_run_id") == run_id).select("date_key").distinct().collect()
            date_keys = [r["date_key"] for r in rows]
        keys = tuple(sorted({int(k) for k in date_keys}))
        if not keys:
            return BuildResult(full, "skipped", details=f"no fact partitions written by run {run_id}")
        predicate, mode = _partition_filter(keys), "incremental"
    agg = daily_sales_frame(fact.filter(predicate) if predicate else fact, run_id=run_id)
    written = agg.count()
    writes.write_table(
        agg, "gold.agg_daily_sales", mode="overwrite", replace_where=predicate, env=settings.env
    )
    return BuildResult(full, mode, inserted=written, date_keys=keys)
