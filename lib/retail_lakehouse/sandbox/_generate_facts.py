"""One day of transactions of the generated sources: OLTP orders / order lines and POS events, with defects.

Internal to :mod:`retail_lakehouse.sandbox.generate`. Every function takes its own numpy Generators (one per
source, day and purpose) and draws the same amounts whatever the defect rates, so a defect-free run and a
defective run of the same seed differ only in the injected defects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from retail_lakehouse.sandbox._generate_entities import DAY, epoch_texts

if TYPE_CHECKING:
    from retail_lakehouse.sandbox._generate_entities import Products
    from retail_lakehouse.sandbox.generate import DefectRates

ORDER_STATUSES = ("completed", "cancelled", "returned", "pending")
ORDER_STATUS_P = (0.90, 0.04, 0.03, 0.03)
CHANNELS = ("store", "online", "mobile")
CHANNEL_P = (0.60, 0.30, 0.10)
PROMO_CODES = ("SPRING10", "WELCOME5", "VIP20", "FREESHIP", "BOGO")
DISCOUNTS = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
PAYMENT_TYPES = ("card", "cash", "mobile")
PAYMENT_P = (0.60, 0.25, 0.15)
BAD_DATES = ("31/02/2024 25:61", "N/A", "", "2024-13-45 99:99:99", "00/00/0000 00:00", "yesterday")
# Order-time profile: quiet nights, busy late afternoon.
_HOUR_W = np.array([1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 9, 10, 11, 10, 9, 9, 10, 11, 12, 11, 9, 7, 4, 2], float)
HOUR_P = _HOUR_W / _HOUR_W.sum()
TRADING_HOURS = tuple(range(8, 22))  # POS: stores open 08:00-22:00 UTC
_POS_W = _HOUR_W[8:22]
POS_HOUR_P = _POS_W / _POS_W.sum()
UNKNOWN_ID_BASE = 9_000_000  # product / store ids from here on never exist
POS_LINES_PER_FILE = 500


@dataclass
class OrdersDay:
    """Rows of one day, ready for executemany, and the defects injected."""

    orders: list[tuple]
    order_items: list[tuple]
    defects: dict[str, int] = field(default_factory=dict)


def _assign(kind: np.ndarray, draws: np.ndarray, rates: list[float]) -> None:
    """Give each row at most one defect (1-based code, by priority) where its draw is below the rate."""
    for j, rate in enumerate(rates):
        hit = (kind == 0) & (draws[:, j] < rate)
        kind[hit] = j + 1


@dataclass
class _Orders:
    """One day's orders as drawn, one array entry per order; defects are applied in place."""

    order_id: np.ndarray
    customer: np.ndarray
    store: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    order_ts: np.ndarray
    updated: np.ndarray
    promo: list[str | None]
    n_lines: np.ndarray

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        *,
        day_start: int,
        scale_factor: float,
        n_customers: int,
        n_stores: int,
        first_order_id: int,
    ) -> _Orders:
        n = max(1, int(rng.poisson(2_000 * scale_factor)))
        order_id = first_order_id + np.arange(n)
        customer = rng.integers(1, n_customers + 1, n)
        store = rng.integers(1, n_stores + 1, n)
        channel = rng.choice(len(CHANNELS), n, p=CHANNEL_P)
        status = rng.choice(len(ORDER_STATUSES), n, p=ORDER_STATUS_P)
        sec = rng.choice(24, n, p=HOUR_P) * 3600 + rng.integers(0, 3600, n)
        order_ts = day_start + np.sort(sec)
        updated = np.minimum(order_ts + rng.integers(0, 900, n), day_start + DAY - 1)
        promo_hit = rng.random(n) < 0.3
        promo_pick = rng.integers(0, len(PROMO_CODES), n)
        n_lines = rng.integers(1, 6, n)
        promo = [
            PROMO_CODES[p] if h else None
            for p, h in zip(promo_pick.tolist(), promo_hit.tolist(), strict=True)
        ]
        return cls(order_id, customer, store, channel, status, order_ts, updated, promo, n_lines)


@dataclass
class _Lines:
    """One day's order lines as drawn, one array entry per line; defects are applied in place."""

    order: np.ndarray  # index into the day's orders
    product: np.ndarray
    quantity: np.ndarray
    discount: np.ndarray
    price: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, products: Products, n_lines: np.ndarray) -> _Lines:
        m = int(n_lines.sum())
        order = np.repeat(np.arange(len(n_lines)), n_lines)
        active = products.active_ids
        product = active[rng.choice(len(active), m, p=products.popularity)]
        quantity = 1 + rng.poisson(0.6, m)
        discount = np.where(rng.random(m) < 0.3, rng.choice(DISCOUNTS, m), 0.0)
        price = products.unit_price[product - 1]
        return cls(order, product, quantity, discount, price)

    def order_totals(self, n_orders: int) -> np.ndarray:
        """Sum of each order's line amounts, rounded to cents."""
        amount = self.quantity * self.price * (1.0 - self.discount)
        return np.round(np.bincount(self.order, weights=amount, minlength=n_orders), 2)


@dataclass
class _OrderDefectDraws:
    """Draws for the order defects: null customer, unknown store, bad order_ts, late arrival, duplicate."""

    kind: np.ndarray  # (n, 5) uniform draws, one column per defect
    late_days: np.ndarray
    late_sec: np.ndarray
    late_upd: np.ndarray
    bad_pick: np.ndarray
    bad_store: np.ndarray
    dup_delay: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int) -> _OrderDefectDraws:
        return cls(
            rng.random((n, 5)), rng.integers(1, 4, n), rng.integers(0, DAY, n), rng.integers(0, DAY, n),
            rng.integers(0, len(BAD_DATES), n), UNKNOWN_ID_BASE + rng.integers(0, 1_000_000, n),
            rng.integers(0, 600, n) * (rng.random(n) < 0.5),
        )  # fmt: skip


@dataclass
class _LineDefectDraws:
    """Draws for the line defects: null product, unknown product, negative quantity, bad price, duplicate."""

    kind: np.ndarray  # (m, 5) uniform draws, one column per defect
    bad_product: np.ndarray
    price_high: np.ndarray
    price_factor: np.ndarray
    price_zero: np.ndarray
    dup_delay: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, m: int) -> _LineDefectDraws:
        return cls(
            rng.random((m, 5)), UNKNOWN_ID_BASE + rng.integers(0, 1_000_000, m), rng.random(m) < 0.5,
            rng.uniform(11.0, 50.0, m), rng.random(m) < 0.5, rng.integers(0, 600, m) * (rng.random(m) < 0.5),
        )  # fmt: skip


def _order_defects(
    orders: _Orders, draws: _OrderDefectDraws, rates: DefectRates, *, day: int, day_start: int
) -> tuple[np.ndarray, np.ndarray]:
    """Defect code per order (1 null customer, 2 unknown store, 3 bad order_ts, 4 late) and the duplicates.

    Late arrivals are applied here (order_ts moved back, updated_at within the day); the other codes are
    applied when the rows are built.
    """
    kind = np.zeros(len(orders.order_id), dtype="int8")
    late_rate = rates.late_arriving if day > 0 else 0.0  # nothing exists before day 0 to arrive late for
    _assign(kind, draws.kind, [rates.null_keys, rates.unknown_references, rates.unparseable_dates, late_rate])
    late = kind == 4
    late_days = np.minimum(draws.late_days, day)
    orders.order_ts = np.where(late, day_start - late_days * DAY + draws.late_sec, orders.order_ts)
    orders.updated = np.where(late, day_start + draws.late_upd, orders.updated)
    return kind, (kind == 0) & (draws.kind[:, 4] < rates.duplicate_records)


def _line_defects(
    lines: _Lines, draws: _LineDefectDraws, rates: DefectRates
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Defect code per line (1 null product, 2 unknown product, 3 negative quantity, 4 bad price).

    Returns:
        The codes, the duplicates, and the product_id column (objects, None for null keys).
    """
    kind = np.zeros(len(lines.order), dtype="int8")
    _assign(kind, draws.kind, [rates.null_keys, rates.unknown_references, rates.negative_quantities,
                               rates.price_out_of_range])  # fmt: skip
    dup = (kind == 0) & (draws.kind[:, 4] < rates.duplicate_records)
    product_col = np.where(kind == 2, draws.bad_product, lines.product).astype(object)
    product_col[kind == 1] = None
    lines.quantity = np.where(kind == 3, -lines.quantity, lines.quantity)
    price = lines.price
    bad_price = np.where(
        draws.price_high, np.round(price * draws.price_factor, 2), np.where(draws.price_zero, 0.0, -price)
    )
    lines.price = np.where(kind == 4, bad_price, price)
    return kind, dup, product_col


def _order_rows(
    orders: _Orders,
    kind: np.ndarray,
    draws: _OrderDefectDraws,
    total: np.ndarray,
    *,
    with_promo: bool,
    dup_idx: np.ndarray,
    day_end: int,
) -> list[tuple]:
    """Order rows with the null customers, unknown stores and bad timestamps, then the re-sent copies."""
    customer_col = orders.customer.astype(object)
    customer_col[kind == 1] = None
    store = np.where(kind == 2, draws.bad_store, orders.store)
    ts_s = epoch_texts(orders.order_ts)
    for i in np.flatnonzero(kind == 3).tolist():
        ts_s[i] = BAD_DATES[draws.bad_pick[i]]
    upd_s = epoch_texts(orders.updated)
    cols = [orders.order_id.tolist(), customer_col.tolist(), store.tolist(), ts_s,
            [ORDER_STATUSES[s] for s in orders.status.tolist()],
            [CHANNELS[c] for c in orders.channel.tolist()], total.tolist(), upd_s]  # fmt: skip
    if with_promo:
        cols.append(orders.promo)
    rows = list(zip(*cols, strict=True))
    if len(dup_idx):
        dup_upd = epoch_texts(np.minimum(orders.updated[dup_idx] + draws.dup_delay[dup_idx], day_end))
        for i, u in zip(dup_idx.tolist(), dup_upd, strict=True):
            row = list(rows[i])
            row[7] = u
            rows.append(tuple(row))
    return rows


def _item_rows(
    lines: _Lines,
    product_col: np.ndarray,
    order_id: np.ndarray,
    updated: np.ndarray,
    *,
    first_item_id: int,
    dup_idx: np.ndarray,
    dup_delay: np.ndarray,
    day_end: int,
) -> list[tuple]:
    """Order line rows, written with their order (same updated_at), then the re-sent copies."""
    line_updated = updated[lines.order]
    rows = list(zip(
        (first_item_id + np.arange(len(lines.order))).tolist(), order_id[lines.order].tolist(),
        product_col.tolist(), lines.quantity.tolist(), np.round(lines.price, 2).tolist(),
        np.round(lines.discount, 2).tolist(), epoch_texts(line_updated),
        strict=True,
    ))  # fmt: skip
    if len(dup_idx):
        dup_upd = epoch_texts(np.minimum(line_updated[dup_idx] + dup_delay[dup_idx], day_end))
        for i, u in zip(dup_idx.tolist(), dup_upd, strict=True):
            rows.append((*rows[i][:6], u))
    return rows


def orders_day(
    rng: np.random.Generator,
    rng_items: np.random.Generator,
    rng_defects: np.random.Generator,
    *,
    day: int,
    day_start: int,
    scale_factor: float,
    n_customers: int,
    n_stores: int,
    products: Products,
    first_order_id: int,
    first_item_id: int,
    rates: DefectRates,
    with_promo: bool,
) -> OrdersDay:
    """Orders and order lines written (updated_at) on `day`."""
    orders = _Orders.draw(
        rng, day_start=day_start, scale_factor=scale_factor, n_customers=n_customers, n_stores=n_stores,
        first_order_id=first_order_id,
    )  # fmt: skip
    lines = _Lines.draw(rng_items, products, orders.n_lines)
    total = lines.order_totals(len(orders.order_id))  # of the clean lines, before defects
    order_draws = _OrderDefectDraws.draw(rng_defects, len(orders.order_id))
    line_draws = _LineDefectDraws.draw(rng_defects, len(lines.order))

    okind, order_dup = _order_defects(orders, order_draws, rates, day=day, day_start=day_start)
    lkind, line_dup, product_col = _line_defects(lines, line_draws, rates)
    dup_idx, ldup_idx = np.flatnonzero(order_dup), np.flatnonzero(line_dup)
    day_end = day_start + DAY - 1
    order_rows = _order_rows(
        orders, okind, order_draws, total, with_promo=with_promo, dup_idx=dup_idx, day_end=day_end
    )
    item_rows = _item_rows(
        lines, product_col, orders.order_id, orders.updated, first_item_id=first_item_id, dup_idx=ldup_idx,
        dup_delay=line_draws.dup_delay, day_end=day_end,
    )  # fmt: skip
    defects = {
        "orders.null_keys": int((okind == 1).sum()),
        "orders.unknown_references": int((okind == 2).sum()),
        "orders.unparseable_dates": int((okind == 3).sum()),
        "orders.late_arriving": int((okind == 4).sum()),
        "orders.duplicate_records": len(dup_idx),
        "order_items.null_keys": int((lkind == 1).sum()),
        "order_items.unknown_references": int((lkind == 2).sum()),
        "order_items.negative_quantities": int((lkind == 3).sum()),
        "order_items.price_out_of_range": int((lkind == 4).sum()),
        "order_items.duplicate_records": len(ldup_idx),
    }
    return OrdersDay(order_rows, item_rows, defects)


@dataclass
class PosDay:
    """JSON-lines files of one day: (hour, part, text) and the defects injected."""

    files: list[tuple[int, int, str]]
    events: int
    defects: dict[str, int]


def _uuids(raw: bytes, n: int) -> list[str]:
    hexes = raw.hex()
    out = []
    for k in range(n):
        h = hexes[32 * k : 32 * k + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}")
    return out


def pos_day(
    rng: np.random.Generator,
    rng_defects: np.random.Generator,
    *,
    day_start: int,
    scale_factor: float,
    n_customers: int,
    n_stores: int,
    products: Products,
    rates: DefectRates,
) -> PosDay:
    """POS events of one day, ~1,000 x scale_factor, every trading hour at least one event."""
    hours = len(TRADING_HOURS)
    n_tx = max(hours, int(rng.poisson(1_000 * scale_factor / 3)))
    hour = (
        np.concatenate([np.arange(hours), rng.choice(hours, n_tx - hours, p=POS_HOUR_P)]) + TRADING_HOURS[0]
    )
    tx_sec = hour * 3600 + rng.integers(0, 3600 - 120, n_tx)
    store = rng.integers(1, n_stores + 1, n_tx)
    register = rng.integers(1, 9, n_tx)
    payment = rng.choice(len(PAYMENT_TYPES), n_tx, p=PAYMENT_P)
    has_customer = rng.random(n_tx) < 0.55
    customer = rng.integers(1, n_customers + 1, n_tx)
    lines = rng.integers(1, 6, n_tx)
    m = int(lines.sum())
    ev_tx = np.repeat(np.arange(n_tx), lines)
    ev_us = (tx_sec[ev_tx] + rng.integers(0, 120, m)) * 1_000_000 + rng.integers(0, 1_000_000, m)
    active = products.active_ids
    product = active[rng.choice(len(active), m, p=products.popularity)]
    quantity = 1 + rng.poisson(0.4, m)
    event_id = _uuids(rng.bytes(16 * m), m)

    dd = rng_defects.random((m, 2))
    dup_shift = rng_defects.random(m)
    kind = np.zeros(m, dtype="int8")
    _assign(kind, dd, [rates.negative_quantities])
    quantity = np.where(kind == 1, -quantity, quantity)
    ev_hour = hour[ev_tx]
    is_dup = (kind == 0) & (dd[:, 1] < rates.duplicate_records) & (ev_hour < TRADING_HOURS[-1])
    # a re-sent event lands in the file of a later hour of the same day
    dup_hour = ev_hour + 1 + (dup_shift * (TRADING_HOURS[-1] - ev_hour)).astype("int64")

    date_s = epoch_texts([day_start])[0][:10].replace("-", "")
    ts = np.datetime_as_string((day_start * 1_000_000 + ev_us).astype("datetime64[us]")).tolist()
    price = products.unit_price[product - 1].tolist()
    cust = np.where(has_customer, customer, -1)[ev_tx].tolist()
    tx_l, store_l, reg_l, pay_l = (
        ev_tx.tolist(),
        store[ev_tx].tolist(),
        register[ev_tx].tolist(),
        payment[ev_tx].tolist(),
    )
    prod_l, qty_l = product.tolist(), quantity.tolist()
    text = [
        f'{{"event_id": "{event_id[k]}", "event_ts": "{ts[k]}Z", "store_id": {store_l[k]}, '
        f'"register_id": "R{reg_l[k]:02d}", "transaction_id": "T{date_s}-{tx_l[k]:06d}", '
        f'"product_id": {prod_l[k]}, "quantity": {qty_l[k]}, "unit_price": {price[k]!r}, '
        f'"payment_type": "{PAYMENT_TYPES[pay_l[k]]}", "customer_id": {cust[k] if cust[k] > 0 else "null"}}}\n'
        for k in range(m)
    ]
    order = np.argsort(ev_us, kind="stable")
    by_hour: dict[int, list[str]] = {h: [] for h in TRADING_HOURS}
    for k in order.tolist():
        by_hour[int(ev_hour[k])].append(text[k])
    for k in order[is_dup[order]].tolist():
        by_hour[int(dup_hour[k])].append(text[k])
    files = []
    for h, hour_lines in by_hour.items():
        for part, lo in enumerate(range(0, max(1, len(hour_lines)), POS_LINES_PER_FILE)):
            files.append((h, part, "".join(hour_lines[lo : lo + POS_LINES_PER_FILE])))
    defects = {
        "pos_events.negative_quantities": int((kind == 1).sum()),
        "pos_events.duplicate_records": int(is_dup.sum()),
    }
    return PosDay(files, m + int(is_dup.sum()), defects)


RETURN_REASONS = ("damaged", "wrong_size", "not_as_described", "changed_mind", "late_delivery")
RETURN_SHARE = 0.05  # returns a day, as a share of the ~2,000 x scale orders a day
_RETURN_DEFECTS = ("null_keys", "duplicate_records", "negative_amounts", "unknown_references")


@dataclass
class ReturnsDay:
    """Rows of the `returns` table written on one day, and the defects injected."""

    rows: list[tuple]
    new_ids: int
    defects: dict[str, int]


def returns_day(
    rng: np.random.Generator,
    rng_defects: np.random.Generator,
    *,
    day_start: int,
    scale_factor: float,
    orders_before: int,
    first_return_id: int,
    rate: float,
) -> ReturnsDay:
    """Returns of orders placed earlier (`order_id` < `orders_before`), written (updated_at) on one day.

    A share `rate` of the rows carries one defect, the kinds drawn evenly: a NULL `return_id`, a
    re-sent copy of the row (same return_id, updated_at up to 10 minutes later), a negative
    `refund_amount`, an `order_id` that never exists (>= 9,000,000).
    """
    n = int(rng.poisson(RETURN_SHARE * 2_000 * scale_factor)) if orders_before > 1 else 0
    order_id = rng.integers(1, max(2, orders_before), n)
    at = day_start + np.sort(rng.integers(0, DAY, n))
    reason = rng.integers(0, len(RETURN_REASONS), n)
    amount = np.round(rng.uniform(5.0, 250.0, n), 2)
    hit, kind, delay = rng_defects.random(n) < rate, rng_defects.integers(0, 4, n), rng_defects.integers(0, 600, n)
    ts = epoch_texts(at)
    rows, dups = [], []
    counts = dict.fromkeys(_RETURN_DEFECTS, 0)
    for k in range(n):
        rid, oid, value = first_return_id + k, int(order_id[k]), float(amount[k])
        defect = _RETURN_DEFECTS[int(kind[k])] if hit[k] else None
        if defect:
            counts[defect] += 1
        if defect == "negative_amounts":
            value = -value
        elif defect == "unknown_references":
            oid = UNKNOWN_ID_BASE + oid
        row = (None if defect == "null_keys" else rid, oid, ts[k], RETURN_REASONS[int(reason[k])], value, ts[k])
        rows.append(row)
        if defect == "duplicate_records":
            resent = min(int(at[k]) + int(delay[k]), day_start + DAY - 1)
            dups.append((*row[:5], epoch_texts([resent])[0]))
    return ReturnsDay(rows + dups, n, {f"returns.{d}": c for d, c in counts.items()})
