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

    # order lines
    m = int(n_lines.sum())
    line_order = np.repeat(np.arange(n), n_lines)
    active = products.active_ids
    product = active[rng_items.choice(len(active), m, p=products.popularity)]
    quantity = 1 + rng_items.poisson(0.6, m)
    discount = np.where(rng_items.random(m) < 0.3, rng_items.choice(DISCOUNTS, m), 0.0)
    price = products.unit_price[product - 1]
    amount = quantity * price * (1.0 - discount)
    total = np.round(np.bincount(line_order, weights=amount, minlength=n), 2)

    # order defects: null customer, unknown store, unparseable order_ts, late arrival, duplicate
    od = rng_defects.random((n, 5))
    late_days = rng_defects.integers(1, 4, n)
    late_sec = rng_defects.integers(0, DAY, n)
    late_upd = rng_defects.integers(0, DAY, n)
    bad_pick = rng_defects.integers(0, len(BAD_DATES), n)
    bad_store = UNKNOWN_ID_BASE + rng_defects.integers(0, 1_000_000, n)
    dup_delay = rng_defects.integers(0, 600, n) * (rng_defects.random(n) < 0.5)
    # line defects: null product, unknown product, negative quantity, price out of range, duplicate
    ld = rng_defects.random((m, 5))
    bad_product = UNKNOWN_ID_BASE + rng_defects.integers(0, 1_000_000, m)
    price_high = rng_defects.random(m) < 0.5
    price_factor = rng_defects.uniform(11.0, 50.0, m)
    price_zero = rng_defects.random(m) < 0.5
    line_dup_delay = rng_defects.integers(0, 600, m) * (rng_defects.random(m) < 0.5)

    okind = np.zeros(n, dtype="int8")
    late_rate = rates.late_arriving if day > 0 else 0.0  # nothing exists before day 0 to arrive late for
    _assign(okind, od, [rates.null_keys, rates.unknown_references, rates.unparseable_dates, late_rate])
    late = okind == 4
    late_days = np.minimum(late_days, day)
    order_ts = np.where(late, day_start - late_days * DAY + late_sec, order_ts)
    updated = np.where(late, day_start + late_upd, updated)
    order_dup = (okind == 0) & (od[:, 4] < rates.duplicate_records)
    # lines are written with their order
    line_updated = updated[line_order]

    lkind = np.zeros(m, dtype="int8")
    _assign(lkind, ld, [rates.null_keys, rates.unknown_references, rates.negative_quantities,
                        rates.price_out_of_range])  # fmt: skip
    line_dup = (lkind == 0) & (ld[:, 4] < rates.duplicate_records)
    product_col = np.where(lkind == 2, bad_product, product).astype(object)
    product_col[lkind == 1] = None
    quantity = np.where(lkind == 3, -quantity, quantity)
    bad_price = np.where(price_high, np.round(price * price_factor, 2), np.where(price_zero, 0.0, -price))
    price = np.where(lkind == 4, bad_price, price)

    # orders -> rows
    customer_col = customer.astype(object)
    customer_col[okind == 1] = None
    store = np.where(okind == 2, bad_store, store)
    ts_s = epoch_texts(order_ts)
    for i in np.flatnonzero(okind == 3).tolist():
        ts_s[i] = BAD_DATES[bad_pick[i]]
    upd_s = epoch_texts(updated)
    promo = [
        PROMO_CODES[p] if h else None for p, h in zip(promo_pick.tolist(), promo_hit.tolist(), strict=True)
    ]
    cols = [order_id.tolist(), customer_col.tolist(), store.tolist(), ts_s,
            [ORDER_STATUSES[s] for s in status.tolist()], [CHANNELS[c] for c in channel.tolist()],
            total.tolist(), upd_s]  # fmt: skip
    if with_promo:
        cols.append(promo)
    orders = list(zip(*cols, strict=True))
    dup_idx = np.flatnonzero(order_dup)
    if len(dup_idx):
        dup_upd = epoch_texts(np.minimum(updated[dup_idx] + dup_delay[dup_idx], day_start + DAY - 1))
        for i, u in zip(dup_idx.tolist(), dup_upd, strict=True):
            row = list(orders[i])
            row[7] = u
            orders.append(tuple(row))

    items = list(zip(
        (first_item_id + np.arange(m)).tolist(), order_id[line_order].tolist(), product_col.tolist(),
        quantity.tolist(), np.round(price, 2).tolist(), np.round(discount, 2).tolist(), epoch_texts(line_updated),
        strict=True,
    ))  # fmt: skip
    ldup_idx = np.flatnonzero(line_dup)
    if len(ldup_idx):
        dup_upd = epoch_texts(np.minimum(line_updated[ldup_idx] + line_dup_delay[ldup_idx], day_start + DAY - 1))
        for i, u in zip(ldup_idx.tolist(), dup_upd, strict=True):
            items.append((*items[i][:6], u))

    defects = {
        "orders.null_keys": int((okind == 1).sum()),
        "orders.unknown_references": int((okind == 2).sum()),
        "orders.unparseable_dates": int((okind == 3).sum()),
        "orders.late_arriving": int(late.sum()),
        "orders.duplicate_records": len(dup_idx),
        "order_items.null_keys": int((lkind == 1).sum()),
        "order_items.unknown_references": int((lkind == 2).sum()),
        "order_items.negative_quantities": int((lkind == 3).sum()),
        "order_items.price_out_of_range": int((lkind == 4).sum()),
        "order_items.duplicate_records": len(ldup_idx),
    }
    return OrdersDay(orders, items, defects)


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
