"""Deterministic generator of the retail source systems: a store OLTP database and POS landing files.

The OLTP system is a SQLite file with ``customers``, ``products``, ``stores``, ``orders`` and
``order_items``, and from day ``returns_day`` on ``returns`` (a source not onboarded yet: the
``new_source`` drill onboards it); the POS system drops JSON-lines files into ``landing/pos/YYYY-MM-DD/``. Both carry
the defects listed in ``defects.yaml`` at configurable rates, and the counts actually injected are returned
so that the pipeline's reconciliation can be checked.

Conventions:
    * Timestamps are UTC text ``YYYY-MM-DD HH:MM:SS`` (POS: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``).
    * ``order_items.discount`` is a fraction (0.00-0.30): line amount = quantity * unit_price * (1 - discount);
      ``orders.total_amount`` is the sum of the order's clean line amounts.
    * Reference tables hold the latest state (one row per key, ``updated_at`` = last change), plus re-sent
      duplicate rows; orders and lines are written once, on the day of their ``updated_at``.
    * ``orders.promo_code`` is added by an ``ALTER TABLE`` on ``schema_change_day``: a run that stops
      before that day has no such column; after it, rows written earlier hold NULL.

Determinism: every (source, day) draws from ``np.random.SeedSequence([seed, stream, day, purpose])``;
state that spans days (addresses, prices, ids) is rebuilt by replaying the days in order. So ``days=N+1``
reproduces the first N days of ``days=N`` exactly, landing files byte for byte.
"""

from __future__ import annotations

import calendar
import math
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path

import numpy as np
import yaml

from retail_lakehouse.core.errors import ConfigError, ParameterError
from retail_lakehouse.sandbox import _generate_entities as ent
from retail_lakehouse.sandbox import _generate_facts as facts

__all__ = ["SOURCE_TABLES", "DefectRates", "GenerateResult", "describe_defects", "generate"]

DEFECTS_FILE = Path(__file__).with_name("defects.yaml")
MAX_RATE = 0.5
SOURCE_TABLES = ("customers", "products", "stores", "orders", "order_items")

# Random streams: SeedSequence([seed, stream, day, purpose]).
_CUSTOMERS, _PRODUCTS, _STORES, _ORDERS, _ORDER_ITEMS, _POS, _CUSTOMER_CHANGES, _PRICE_CHANGES = range(1, 9)
_RETURNS = 9
_DATA, _DEFECTS = 0, 1

_DDL = {
    "customers": "customer_id INTEGER, first_name TEXT, last_name TEXT, email TEXT, phone TEXT, address TEXT, "
    "city TEXT, state TEXT, postal_code TEXT, segment TEXT, created_at TEXT, updated_at TEXT",
    "products": "product_id INTEGER, sku TEXT, product_name TEXT, category TEXT, subcategory TEXT, brand TEXT, "
    "unit_price REAL, unit_cost REAL, is_active INTEGER, created_at TEXT, updated_at TEXT",
    "stores": "store_id INTEGER, store_code TEXT, store_name TEXT, city TEXT, state TEXT, region TEXT, "
    "store_type TEXT, opened_date TEXT, updated_at TEXT",
    "orders": "order_id INTEGER, customer_id INTEGER, store_id INTEGER, order_ts TEXT, status TEXT, "
    "channel TEXT, total_amount REAL, updated_at TEXT",
    "order_items": "order_item_id INTEGER, order_id INTEGER, product_id INTEGER, quantity INTEGER, "
    "unit_price REAL, discount REAL, updated_at TEXT",
}
# Created on `returns_day` (the OLTP's returns module goes live): a run that stops before has no table.
_RETURNS_DDL = "return_id INTEGER, order_id INTEGER, return_ts TEXT, reason TEXT, refund_amount REAL, updated_at TEXT"
_PROMO_MIGRATION = "ALTER TABLE orders ADD COLUMN promo_code TEXT"
_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class DefectRates:
    """Share of rows per day that carry each defect; documented in ``defects.yaml``.

    Attributes:
        duplicate_records: re-sent copies of orders, order lines, customer rows and POS events.
        null_keys: order lines without product_id, orders without customer_id.
        negative_quantities: order lines and POS events with quantity < 0.
        price_out_of_range: order lines with unit_price <= 0 or > 10x the list price.
        unparseable_dates: orders whose order_ts is not a timestamp.
        unknown_references: order lines / orders whose product_id / store_id does not exist.
        late_arriving: orders written 1-3 days after their order_ts.
        customer_changes: customers whose address or segment changes on a day.
        price_changes: products whose unit_price changes on a day.
        schema_change_day: day index from which orders carry ``promo_code``.
        returns_day: day index from which the OLTP has a ``returns`` table.
        return_defects: returns rows with one defect (NULL return_id, re-sent copy, negative
            refund_amount, unknown order_id, drawn evenly).
    """

    duplicate_records: float
    null_keys: float
    negative_quantities: float
    price_out_of_range: float
    unparseable_dates: float
    unknown_references: float
    late_arriving: float
    customer_changes: float
    price_changes: float
    schema_change_day: int
    returns_day: int = 10
    return_defects: float = 0.04

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_day"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ParameterError(f.name, f"must be an integer day index >= 0, got {value!r}")
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= MAX_RATE
            ):
                raise ParameterError(
                    f.name, f"must be a fraction of rows between 0 and {MAX_RATE}, got {value!r}; e.g. 0.01"
                )

    @classmethod
    def load(cls, path: Path | None = None, **overrides: float) -> DefectRates:
        """Rates from a defects file (default: the packaged ``defects.yaml``), then keyword overrides.

        Raises:
            ConfigError: the file is missing or malformed.
            ParameterError: an override names an unknown defect or a rate is out of range.
        """
        path = Path(path) if path is not None else DEFECTS_FILE
        try:
            doc = yaml.safe_load(path.read_text())
            values = {name: spec["value"] for name, spec in doc["defects"].items()}
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"cannot read defect rates from {path}: {exc}; expected `defects: {{name: {{value: ...}}}}`"
            ) from exc
        known = {f.name for f in fields(cls)}
        for name in [*values, *overrides]:
            if name not in known:
                raise ParameterError(name, f"unknown defect; known: {', '.join(sorted(known))}")
        missing = known - values.keys() - overrides.keys()
        if missing:
            raise ConfigError(f"{path} does not define {', '.join(sorted(missing))}")
        return cls(**{**values, **overrides})

    @classmethod
    def none(cls) -> DefectRates:
        """Clean sources: every rate 0; the schema change and the returns table still come on their days."""
        default = cls.load()
        return replace(default, **{f.name: 0.0 for f in fields(cls) if not f.name.endswith("_day")})


@dataclass(frozen=True)
class GenerateResult:
    """What :func:`generate` wrote.

    Attributes:
        rows: rows written per source table, and ``pos_events`` (duplicates included).
        pos_files: number of landing files.
        defects: injected counts keyed ``<table>.<defect>``, e.g. ``orders.null_keys``.
    """

    oltp_path: Path
    landing_dir: Path
    days: int
    start_date: date
    rows: dict[str, int]
    pos_files: int
    defects: dict[str, int] = field(default_factory=dict)
    seed: int = 42
    scale_factor: float = 1.0


def _rng(seed: int, stream: int, day: int, purpose: int = _DATA) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, day, purpose]))


def _check_args(scale_factor: float, days: int, seed: int, start_date: date) -> None:
    if (
        isinstance(scale_factor, bool)
        or not isinstance(scale_factor, int | float)
        or not (math.isfinite(scale_factor) and scale_factor > 0)
    ):
        raise ParameterError(
            "scale_factor", f"must be a number > 0 (1 = ~2,000 orders a day), got {scale_factor!r}"
        )
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ParameterError("days", f"must be an integer >= 1, got {days!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError("seed", f"must be an integer >= 0, got {seed!r}")
    if not isinstance(start_date, date):
        raise ParameterError(
            "start_date", f"must be a datetime.date, e.g. date(2024, 1, 1), got {start_date!r}"
        )


def _insert(conn: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    if rows:
        names = [c.split()[0] for c in _DDL[table].split(", ")]
        if len(rows[0]) > len(names):  # orders after the promo_code migration
            names.append("promo_code")
        marks = ",".join("?" * len(names))
        conn.executemany(f"INSERT INTO {table} ({','.join(names)}) VALUES ({marks})", rows)


def _write_file(path: Path, text: str, mtime: int) -> None:
    """Write unless identical (keeps the file untouched for readers), then stamp the mtime."""
    data = text.encode()
    if not (path.exists() and path.read_bytes() == data):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    os.utime(path, (mtime, mtime))


def _prune_landing(landing_dir: Path, written: set[Path]) -> None:
    """Drop POS files of an earlier run that this run did not produce (other seed, fewer days)."""
    for day_dir in landing_dir.iterdir():
        if not (day_dir.is_dir() and _DATE_DIR.match(day_dir.name)):
            continue
        for f in day_dir.glob("pos_*.jsonl*"):
            if f not in written:
                f.unlink()
        if not any(day_dir.iterdir()):
            day_dir.rmdir()


@contextmanager
def _replacing_database(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a new temporary file that replaces `path` once committed, or is deleted on error."""
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp_path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        yield conn
        conn.commit()
    except BaseException:
        conn.close()
        tmp_path.unlink(missing_ok=True)
        raise
    conn.close()
    os.replace(tmp_path, path)


class _Generation:
    """State of one :func:`generate` run: the entities, id counters, counts and the files written.

    Call :meth:`day` for each day in order, then :meth:`finish`. Reference-data changes of a day take effect
    in the sales of the next day.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        seed: int,
        scale_factor: float,
        rates: DefectRates,
        start_date: date,
        landing_dir: Path,
    ) -> None:
        self.conn, self.seed, self.scale_factor, self.rates = conn, seed, scale_factor, rates
        self.start_date, self.landing_dir = start_date, landing_dir
        self.start = calendar.timegm(start_date.timetuple())
        self.customers = ent.base_customers(
            self._random(_CUSTOMERS, 0), round(10_000 * scale_factor), self.start
        )
        self.products = ent.base_products(
            self._random(_PRODUCTS, 0), max(1, round(2_000 * scale_factor)), self.start
        )
        self.stores = ent.base_stores(self._random(_STORES, 0), max(1, round(50 * scale_factor)), self.start)
        if len(self.customers) == 0:
            before = self.start - ent.DAY
            self.customers.add(self._random(_CUSTOMERS, 0, _DEFECTS), np.array([before]), np.array([before]))
        self.counts: dict[str, int] = {}
        self.customer_dups: list[tuple] = []
        self.rows = {"orders": 0, "order_items": 0, "pos_events": 0}
        self.pos_files = 0
        self.written: set[Path] = set()
        self.next_order, self.next_item, self.next_return = 1, 1, 1
        # The initial load counts as one day of written customer rows.
        self._resend_customers(self._random(_CUSTOMERS, 0, _DEFECTS), list(range(len(self.customers))))
        for table, ddl in _DDL.items():
            conn.execute(f"CREATE TABLE {table} ({ddl})")

    def _random(self, stream: int, day: int, purpose: int = _DATA) -> np.random.Generator:
        """The generator of (stream, day, purpose) for this run's seed."""
        return _rng(self.seed, stream, day, purpose)

    def _count(self, defects: dict[str, int]) -> None:
        for key, n in defects.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def day(self, day: int) -> None:
        """Write the orders and POS files of `day`, then apply its reference-data changes."""
        day_start = self.start + day * ent.DAY
        if day == self.rates.schema_change_day:
            self.conn.execute(_PROMO_MIGRATION)
        n_customers = len(self.customers)  # sales reference customers known at the start of the day
        self._orders(day, day_start, n_customers)
        if day >= self.rates.returns_day:
            self._returns(day, day_start)
        self._pos_files(day, day_start, n_customers)
        self._reference_changes(day, day_start)

    def _orders(self, day: int, day_start: int, n_customers: int) -> None:
        """Insert the day's orders and lines; the id counters skip past the new rows, not the re-sent ones."""
        rates = self.rates
        od = facts.orders_day(
            self._random(_ORDERS, day), self._random(_ORDER_ITEMS, day), self._random(_ORDERS, day, _DEFECTS),
            day=day, day_start=day_start, scale_factor=self.scale_factor, n_customers=n_customers,
            n_stores=len(self.stores), products=self.products, first_order_id=self.next_order,
            first_item_id=self.next_item, rates=rates, with_promo=day >= rates.schema_change_day,
        )  # fmt: skip
        self.next_order += len(od.orders) - od.defects["orders.duplicate_records"]
        self.next_item += len(od.order_items) - od.defects["order_items.duplicate_records"]
        _insert(self.conn, "orders", od.orders)
        _insert(self.conn, "order_items", od.order_items)
        self.rows["orders"] += len(od.orders)
        self.rows["order_items"] += len(od.order_items)
        self._count(od.defects)

    def _returns(self, day: int, day_start: int) -> None:
        """Create `returns` on its first day, then insert the day's returns of earlier orders."""
        if day == self.rates.returns_day:
            self.conn.execute(f"CREATE TABLE returns ({_RETURNS_DDL})")
            self.rows["returns"] = 0
        rd = facts.returns_day(
            self._random(_RETURNS, day), self._random(_RETURNS, day, _DEFECTS), day_start=day_start,
            scale_factor=self.scale_factor, orders_before=self.next_order, first_return_id=self.next_return,
            rate=self.rates.return_defects,
        )  # fmt: skip
        self.next_return += rd.new_ids
        if rd.rows:
            marks = ",".join("?" * len(rd.rows[0]))
            self.conn.executemany(f"INSERT INTO returns VALUES ({marks})", rd.rows)
        self.rows["returns"] += len(rd.rows)
        self._count(rd.defects)

    def _pos_files(self, day: int, day_start: int, n_customers: int) -> None:
        """Write the day's POS landing files, one per trading hour and part, stamped with the hour's end."""
        pos = facts.pos_day(
            self._random(_POS, day), self._random(_POS, day, _DEFECTS), day_start=day_start,
            scale_factor=self.scale_factor, n_customers=n_customers, n_stores=len(self.stores),
            products=self.products, rates=self.rates,
        )  # fmt: skip
        day_dir = self.landing_dir / date.fromordinal(self.start_date.toordinal() + day).isoformat()
        day_dir.mkdir(exist_ok=True)
        stamp = day_dir.name.replace("-", "")
        for hour, part, text in pos.files:
            path = day_dir / (f"pos_{stamp}_{hour:02d}" + (f"_{part}" if part else "") + ".jsonl")
            _write_file(path, text, day_start + (hour + 1) * 3600)
            self.written.add(path)
        self.pos_files += len(pos.files)
        self.rows["pos_events"] += pos.events
        self._count(pos.defects)

    def _reference_changes(self, day: int, day_start: int) -> None:
        """Change customers and prices, add new customers, and re-send some of the customer rows written."""
        customers, rates = self.customers, self.rates
        changed = ent.change_customers(
            self._random(_CUSTOMER_CHANGES, day), customers, rates.customer_changes, day_start
        )
        new = ent.new_customers(
            self._random(_CUSTOMERS, day + 1), customers, 10 * self.scale_factor, day_start
        )
        self._count({"customers.customer_changes": len(changed), "customers.new_customers": len(new)})
        self._resend_customers(self._random(_CUSTOMER_CHANGES, day, _DEFECTS), sorted(set(changed)) + new)
        changed_p = ent.change_prices(
            self._random(_PRICE_CHANGES, day), self.products, rates.price_changes, day_start
        )
        self._count({"products.price_changes": len(changed_p)})

    def _resend_customers(self, rng: np.random.Generator, idx: list[int]) -> None:
        """Re-send a share of the customer rows written (`idx`), some with a later updated_at."""
        customers, rate = self.customers, self.rates.duplicate_records
        pick, delay = rng.random(len(idx)), rng.integers(0, 600, len(idx)) * (rng.random(len(idx)) < 0.5)
        for k in np.flatnonzero(pick < rate).tolist():
            i = idx[k]
            updated = ent.epoch_texts([customers.updated_at[i] + int(delay[k])])[0]
            self.customer_dups.append((*customers.row(i)[:11], updated))
        self._count({"customers.duplicate_records": int((pick < rate).sum())})

    def finish(self) -> dict[str, int]:
        """Write the reference tables and the indexes; return the rows written per table."""
        customer_rows = self.customers.rows() + self.customer_dups
        _insert(self.conn, "customers", customer_rows)
        _insert(self.conn, "products", self.products.rows())
        _insert(self.conn, "stores", self.stores)
        for table in [*_DDL, *(["returns"] if "returns" in self.rows else [])]:
            self.conn.execute(f"CREATE INDEX ix_{table}_updated_at ON {table} (updated_at)")
        return {
            "customers": len(customer_rows),
            "products": len(self.products.rows_static),
            "stores": len(self.stores),
            **self.rows,
        }


def generate(
    home: Path,
    *,
    scale_factor: float = 1.0,
    days: int = 30,
    start_date: date = date(2024, 1, 1),
    seed: int = 42,
    defects: DefectRates | None = None,
    oltp_path: Path | None = None,
    landing_dir: Path | None = None,
) -> GenerateResult:
    """Build the store OLTP database and the POS landing files for `days` days from `start_date`.

    Scale factor 1 is ~10,000 customers, 2,000 products, 50 stores, 2,000 orders / 6,000 order lines and
    1,000 POS events a day; everything scales linearly. The database is rebuilt from scratch and replaced
    atomically; landing files are rewritten only where their content changed.

    Args:
        home: lakehouse home; sources go to ``home/sources`` and ``home/landing/pos`` by default.
        scale_factor: size multiplier, > 0.
        days: number of days of transactions, >= 1.
        start_date: first day (day index 0).
        seed: random seed; the same seed gives the same data.
        defects: defect rates; default ``DefectRates.load()``.
        oltp_path: SQLite file to write instead of ``home/sources/store_oltp.sqlite``.
        landing_dir: POS landing folder instead of ``home/landing/pos``.

    Returns:
        Paths, row counts and injected defect counts.

    Raises:
        ParameterError: a size, day count, seed or rate is out of range.
    """
    _check_args(scale_factor, days, seed, start_date)
    rates = defects if defects is not None else DefectRates.load()
    home = Path(home)
    oltp_path = Path(oltp_path) if oltp_path is not None else home / "sources" / "store_oltp.sqlite"
    landing_dir = Path(landing_dir) if landing_dir is not None else home / "landing" / "pos"
    oltp_path.parent.mkdir(parents=True, exist_ok=True)
    landing_dir.mkdir(parents=True, exist_ok=True)

    with _replacing_database(oltp_path) as conn:
        run = _Generation(
            conn,
            seed=seed,
            scale_factor=scale_factor,
            rates=rates,
            start_date=start_date,
            landing_dir=landing_dir,
        )
        for day in range(days):
            run.day(day)
        rows = run.finish()
    _prune_landing(landing_dir, run.written)
    return GenerateResult(
        oltp_path=oltp_path, landing_dir=landing_dir, days=days, start_date=start_date, rows=rows,
        pos_files=run.pos_files, defects=dict(sorted(run.counts.items())), seed=seed,
        scale_factor=scale_factor,
    )  # fmt: skip


def describe_defects(path: Path | None = None) -> dict[str, dict]:
    """The documented defects (value, tables, looks_like, handling, rule) as a mapping, for reports."""
    doc = yaml.safe_load(Path(path or DEFECTS_FILE).read_text())
    return {name: dict(spec) for name, spec in doc["defects"].items()}
