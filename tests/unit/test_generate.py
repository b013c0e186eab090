"""Tests of the deterministic source generator (OLTP SQLite + POS landing files)."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.sandbox.generate import DEFECTS_FILE, DefectRates, GenerateResult, generate

START = date(2024, 1, 1)
QUARANTINE_RATE = 0.05


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _one(db: Path, sql: str) -> int:
    return _rows(db, sql)[0][0]


def _events(result: GenerateResult) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(result.landing_dir.rglob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def _day(n: int) -> str:
    return (START + timedelta(days=n)).isoformat()


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> GenerateResult:
    """Every defect at a visible rate, the schema change on day 1."""
    rates = DefectRates.load(
        duplicate_records=QUARANTINE_RATE, null_keys=QUARANTINE_RATE, negative_quantities=QUARANTINE_RATE,
        price_out_of_range=QUARANTINE_RATE, unparseable_dates=QUARANTINE_RATE,
        unknown_references=QUARANTINE_RATE, late_arriving=QUARANTINE_RATE, customer_changes=0.02,
        price_changes=0.02, schema_change_day=1,
    )  # fmt: skip
    return generate(tmp_path_factory.mktemp("heavy"), scale_factor=0.2, days=3, defects=rates)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> GenerateResult:
    rates = replace(DefectRates.none(), schema_change_day=1)
    return generate(tmp_path_factory.mktemp("clean"), scale_factor=0.2, days=3, defects=rates)


# ---------------------------------------------------------------- layout and size


def test_default_paths_tables_and_columns(heavy):
    assert heavy.oltp_path == heavy.oltp_path.parents[1] / "sources" / "store_oltp.sqlite"
    assert heavy.landing_dir == heavy.oltp_path.parents[1] / "landing" / "pos"
    cols = {
        t: [(r[1], r[2]) for r in _rows(heavy.oltp_path, f"PRAGMA table_info({t})")]
        for t in ("customers", "products", "stores", "orders", "order_items")
    }
    assert [c for c, _ in cols["orders"]] == [
        "order_id", "customer_id", "store_id", "order_ts", "status", "channel", "total_amount",
        "updated_at", "promo_code",
    ]  # fmt: skip
    assert dict(cols["order_items"])["unit_price"] == "REAL"
    assert dict(cols["products"])["is_active"] == "INTEGER"
    assert len(cols["customers"]) == 12 and len(cols["stores"]) == 9
    indexes = {r[0] for r in _rows(heavy.oltp_path, "SELECT tbl_name FROM sqlite_master WHERE type='index'")}
    assert indexes == {"customers", "products", "stores", "orders", "order_items"}
    for table, n in heavy.rows.items():
        if table != "pos_events":
            assert _one(heavy.oltp_path, f"SELECT count(*) FROM {table}") == n
    assert len(_events(heavy)) == heavy.rows["pos_events"]


def test_timestamps_are_iso_utc_text(clean):
    ts = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
    for table in ("customers", "products", "stores", "orders", "order_items"):
        for (value,) in _rows(clean.oltp_path, f"SELECT updated_at FROM {table}"):
            assert ts.match(value), (table, value)
    assert all(ts.match(v) for (v,) in _rows(clean.oltp_path, "SELECT order_ts FROM orders"))
    first = _one(clean.oltp_path, "SELECT min(updated_at) FROM orders")
    last = _one(clean.oltp_path, "SELECT max(updated_at) FROM orders")
    assert first >= _day(0) and last < _day(3)
    assert _one(clean.oltp_path, "SELECT max(created_at) FROM products") < _day(0)


def test_sizes_scale_linearly(tmp_path):
    small = generate(tmp_path / "a", scale_factor=0.05, days=2, defects=DefectRates.none())
    large = generate(tmp_path / "b", scale_factor=0.2, days=2, defects=DefectRates.none())
    assert small.rows["products"] == 100 and large.rows["products"] == 400
    assert small.rows["stores"] == 2 and large.rows["stores"] == 10
    for table in ("orders", "order_items", "pos_events", "customers"):
        assert 3.4 < large.rows[table] / small.rows[table] < 4.6, table
    # scale factor 1 per day: ~2,000 orders with 1..5 lines (mean 3), ~1,000 POS events
    assert 2 * 400 * 0.9 < large.rows["orders"] < 2 * 400 * 1.1
    assert 2.7 < large.rows["order_items"] / large.rows["orders"] < 3.3
    assert 2 * 200 * 0.8 < large.rows["pos_events"] < 2 * 200 * 1.2
    lines = _rows(large.oltp_path, "SELECT count(*) FROM order_items GROUP BY order_id")
    assert {n for (n,) in lines} == {1, 2, 3, 4, 5}


def test_tiny_scale_still_has_one_store(tmp_path):
    result = generate(tmp_path, scale_factor=0.001, days=1, defects=DefectRates.none())
    assert result.rows["stores"] == 1 and result.rows["orders"] >= 1


# ---------------------------------------------------------------- determinism


def test_n_plus_one_days_reproduce_the_first_n(tmp_path):
    a = generate(tmp_path / "a", scale_factor=0.1, days=3, seed=7)
    b = generate(tmp_path / "b", scale_factor=0.1, days=4, seed=7)
    cut = _day(3)
    for table in ("orders", "order_items"):
        rows_a = _rows(a.oltp_path, f"SELECT * FROM {table} ORDER BY rowid")
        rows_b = _rows(b.oltp_path, f"SELECT * FROM {table} WHERE updated_at < '{cut}' ORDER BY rowid")
        assert rows_a == rows_b, table
        assert _one(b.oltp_path, f"SELECT count(*) FROM {table} WHERE updated_at >= '{cut}'") > 0
    assert _rows(a.oltp_path, "SELECT * FROM stores") == _rows(b.oltp_path, "SELECT * FROM stores")
    # reference rows: the longer run only adds day-3 changes on top of the shorter run's rows
    changes = {"customers": "customers.customer_changes", "products": "products.price_changes"}
    for table, key in changes.items():
        rows_a = set(_rows(a.oltp_path, f"SELECT * FROM {table}"))
        rows_b = set(_rows(b.oltp_path, f"SELECT * FROM {table} WHERE updated_at < '{cut}'"))
        assert rows_b <= rows_a
        assert len(rows_a - rows_b) == b.defects[key] - a.defects[key]
    files_a = sorted(p.relative_to(a.landing_dir) for p in a.landing_dir.rglob("*.jsonl"))
    files_b = sorted(
        p.relative_to(b.landing_dir) for p in b.landing_dir.rglob("*.jsonl") if _day(3) not in str(p)
    )
    assert files_a == files_b and len(files_a) == a.pos_files
    for rel in files_a:
        assert (a.landing_dir / rel).read_bytes() == (b.landing_dir / rel).read_bytes()
        assert (a.landing_dir / rel).stat().st_mtime == (b.landing_dir / rel).stat().st_mtime
    assert {k: v for k, v in b.defects.items()} != a.defects


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = generate(tmp_path / "a", scale_factor=0.05, days=2, seed=1)
    b = generate(tmp_path / "b", scale_factor=0.05, days=2, seed=1)
    c = generate(tmp_path / "c", scale_factor=0.05, days=2, seed=2)
    dump = "SELECT * FROM orders ORDER BY rowid"
    assert _rows(a.oltp_path, dump) == _rows(b.oltp_path, dump) != _rows(c.oltp_path, dump)
    assert a.rows == b.rows and a.defects == b.defects


def test_regenerating_replaces_database_and_prunes_stale_files(tmp_path):
    generate(tmp_path, scale_factor=0.05, days=3, seed=1)
    result = generate(tmp_path, scale_factor=0.05, days=2, seed=1)
    assert sorted(p.name for p in result.landing_dir.iterdir()) == [_day(0), _day(1)]
    assert len(list(result.landing_dir.rglob("*.jsonl"))) == result.pos_files
    assert _one(result.oltp_path, "SELECT max(updated_at) FROM orders") < _day(2)
    assert not list(result.oltp_path.parent.glob("*.tmp"))


# ---------------------------------------------------------------- defects


def test_injected_counts_match_the_database(heavy):
    db, d = heavy.oltp_path, heavy.defects
    assert _one(db, "SELECT count(*) FROM orders WHERE customer_id IS NULL") == d["orders.null_keys"]
    assert _one(db, "SELECT count(*) FROM order_items WHERE product_id IS NULL") == d["order_items.null_keys"]
    assert (
        _one(db, "SELECT count(*) FROM order_items WHERE quantity < 0")
        == d["order_items.negative_quantities"]
    )
    assert (
        _one(db, "SELECT count(*) FROM order_items i JOIN products p USING (product_id) "
                 "WHERE i.unit_price <= 0 OR i.unit_price > 10 * p.unit_price")
        == d["order_items.price_out_of_range"]
    )  # fmt: skip
    assert (
        _one(db, "SELECT count(*) FROM order_items WHERE product_id NOT IN (SELECT product_id FROM products)")
        == d["order_items.unknown_references"]
    )
    assert (
        _one(db, "SELECT count(*) FROM orders WHERE store_id NOT IN (SELECT store_id FROM stores)")
        == d["orders.unknown_references"]
    )
    for table, key in (
        ("orders", "order_id"),
        ("order_items", "order_item_id"),
        ("customers", "customer_id"),
    ):
        dups = _one(db, f"SELECT count(*) - count(DISTINCT {key}) FROM {table}")
        assert dups == d[f"{table}.duplicate_records"] > 0, table
    order_ts = [v for (v,) in _rows(db, "SELECT order_ts FROM orders")]
    assert sum(not _parses(v) for v in order_ts) == d["orders.unparseable_dates"]
    events = _events(heavy)
    assert len(events) - len({e["event_id"] for e in events}) == d["pos_events.duplicate_records"] > 0
    assert sum(e["quantity"] < 0 for e in events) == d["pos_events.negative_quantities"] > 0


def test_defects_appear_at_about_their_rate(heavy):
    orders = heavy.rows["orders"] - heavy.defects["orders.duplicate_records"]
    lines = heavy.rows["order_items"] - heavy.defects["order_items.duplicate_records"]
    per_row = {
        "orders.null_keys": orders, "orders.unknown_references": orders, "orders.unparseable_dates": orders,
        "orders.duplicate_records": orders, "orders.late_arriving": orders * 2 / 3,  # none on day 0
        "order_items.null_keys": lines, "order_items.unknown_references": lines,
        "order_items.negative_quantities": lines, "order_items.price_out_of_range": lines,
        "order_items.duplicate_records": lines,
        "pos_events.negative_quantities": heavy.rows["pos_events"],
    }  # fmt: skip
    for key, n in per_row.items():
        assert 0.5 * QUARANTINE_RATE * n < heavy.defects[key] < 1.5 * QUARANTINE_RATE * n, key


def test_no_defects_with_none(clean):
    db = clean.oltp_path
    assert _one(db, "SELECT count(*) FROM orders WHERE customer_id IS NULL") == 0
    assert _one(db, "SELECT count(*) FROM order_items WHERE product_id IS NULL OR quantity <= 0") == 0
    assert _one(db, "SELECT count(*) - count(DISTINCT order_id) FROM orders") == 0
    assert _one(db, "SELECT count(*) - count(DISTINCT order_item_id) FROM order_items") == 0
    assert _one(db, "SELECT count(*) - count(DISTINCT customer_id) FROM customers") == 0
    assert _one(db, "SELECT count(*) FROM orders WHERE store_id NOT IN (SELECT store_id FROM stores)") == 0
    assert (
        _one(db, "SELECT count(*) FROM order_items WHERE product_id NOT IN (SELECT product_id FROM products)")
        == 0
    )
    assert _one(db, "SELECT count(*) FROM orders WHERE date(order_ts) <> date(updated_at)") == 0
    assert _one(db, "SELECT count(*) FROM products WHERE updated_at >= '2024-01-01'") == 0
    assert (
        _one(
            db,
            "SELECT count(*) FROM customers WHERE created_at < '2024-01-01' AND updated_at >= '2024-01-01'",
        )
        == 0
    )
    assert all(_parses(v) for (v,) in _rows(db, "SELECT order_ts FROM orders"))
    events = _events(clean)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["quantity"] > 0 for e in events)
    assert {k: v for k, v in clean.defects.items() if v and k != "customers.new_customers"} == {}


def test_defects_do_not_change_the_clean_rows(heavy, clean):
    """Same seed: the defective run is the clean run plus injected defects (rows are not re-drawn)."""
    assert heavy.rows["products"] == clean.rows["products"]
    same = (
        _rows(heavy.oltp_path, "SELECT count(*) FROM orders")[0][0]
        - heavy.defects["orders.duplicate_records"]
    )
    assert same == clean.rows["orders"]


def test_late_arriving_orders(heavy):
    late = _rows(
        heavy.oltp_path,
        "SELECT order_ts, updated_at FROM orders WHERE order_ts GLOB '[0-9]*-[0-9]*-[0-9]* *' "
        "AND date(order_ts) < date(updated_at)",
    )
    assert len(late) == heavy.defects["orders.late_arriving"] > 0
    for order_ts, updated_at in late:
        lag = (date.fromisoformat(updated_at[:10]) - date.fromisoformat(order_ts[:10])).days
        assert 1 <= lag <= 3 and order_ts[:10] >= _day(0)
    # their lines are written with them (duplicates are re-sent later, so compare first copies)
    mismatched = _one(
        heavy.oltp_path,
        "SELECT count(*) FROM (SELECT order_id, min(updated_at) u FROM order_items GROUP BY order_id) i "
        "JOIN (SELECT order_id, min(updated_at) u FROM orders GROUP BY order_id) o USING (order_id) "
        "WHERE i.u <> o.u",
    )
    assert mismatched == 0


def test_schema_change_adds_promo_code(heavy, tmp_path):
    db = heavy.oltp_path
    before = _rows(db, f"SELECT count(*), count(promo_code) FROM orders WHERE updated_at < '{_day(1)}'")[0]
    after = _rows(db, f"SELECT count(*), count(promo_code) FROM orders WHERE updated_at >= '{_day(1)}'")[0]
    assert before[0] > 0 and before[1] == 0
    assert 0.2 < after[1] / after[0] < 0.4
    early = generate(
        tmp_path, scale_factor=0.05, days=1, defects=replace(DefectRates.none(), schema_change_day=1)
    )
    assert "promo_code" not in [r[1] for r in _rows(early.oltp_path, "PRAGMA table_info(orders)")]


def _latest(db: Path, table: str, key: str) -> dict[int, tuple]:
    return {r[0]: r for r in _rows(db, f"SELECT * FROM {table} ORDER BY {key}, updated_at")}


def test_customer_changes_move_updated_at_and_attributes(tmp_path):
    base = generate(tmp_path / "a", scale_factor=0.1, days=3, defects=DefectRates.none())
    changed = generate(
        tmp_path / "b", scale_factor=0.1, days=3, defects=replace(DefectRates.none(), customer_changes=0.02)
    )
    before, after = (
        _latest(base.oltp_path, "customers", "customer_id"),
        _latest(changed.oltp_path, "customers", "customer_id"),
    )
    assert before.keys() == after.keys()
    moved = [k for k in after if after[k] != before[k]]
    assert 0 < len(moved) <= changed.defects["customers.customer_changes"]
    for k in moved:
        old, new = before[k], after[k]
        assert new[11] > old[11] and new[11] >= _day(0)  # updated_at moved into the run
        assert old[1:5] == new[1:5] and old[10] == new[10]  # names, email, phone, created_at kept
        assert old[5:9] != new[5:9] or old[9] != new[9]  # address/city/state/postal_code or segment
        assert new[9] in {"regular", "premium", "vip", "employee"}
    new_customers = _rows(
        changed.oltp_path, f"SELECT count(*) FROM customers WHERE created_at >= '{_day(0)}'"
    )
    assert new_customers[0][0] == changed.defects["customers.new_customers"] > 0


def test_price_changes_update_products_in_place(heavy, clean):
    before, after = (
        _latest(clean.oltp_path, "products", "product_id"),
        _latest(heavy.oltp_path, "products", "product_id"),
    )
    changed = [k for k in after if after[k][10] >= _day(0)]
    assert len(changed) == len(set(changed)) and 0 < len(changed) <= heavy.defects["products.price_changes"]
    for k in changed:
        assert after[k][6] != before[k][6] and 0.5 < after[k][6] / before[k][6] < 2
        assert after[k][1:6] == before[k][1:6]


# ---------------------------------------------------------------- POS landing files


def test_pos_files_layout_fields_and_mtimes(heavy):
    name = re.compile(r"^pos_(\d{8})_(\d{2})(_\d+)?\.jsonl$")
    ts = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
    fields = {"event_id", "event_ts", "store_id", "register_id", "transaction_id", "product_id", "quantity",
              "unit_price", "payment_type", "customer_id"}  # fmt: skip
    days = sorted(p.name for p in heavy.landing_dir.iterdir())
    assert days == [_day(0), _day(1), _day(2)]
    seen_hours: dict[str, set[int]] = {}
    seen_ids: set[str] = set()
    for f in sorted(heavy.landing_dir.rglob("*.jsonl")):
        m = name.match(f.name)
        assert m and m.group(1) == f.parent.name.replace("-", ""), f
        hour = int(m.group(2))
        seen_hours.setdefault(f.parent.name, set()).add(hour)
        end = datetime.fromisoformat(f.parent.name).replace(hour=hour) + timedelta(hours=1)
        assert f.stat().st_mtime == end.timestamp() - _utc_offset(end)
        for line in f.read_text().splitlines():
            e = json.loads(line)
            assert set(e) == fields and ts.match(e["event_ts"])
            assert isinstance(e["store_id"], int) and isinstance(e["product_id"], int)
            assert e["payment_type"] in {"card", "cash", "mobile"}
            assert e["customer_id"] is None or isinstance(e["customer_id"], int)
            assert re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$", e["event_id"])
            if e["event_id"] in seen_ids:  # a re-sent event comes in a later hour's file
                assert int(e["event_ts"][11:13]) < hour
            else:
                assert int(e["event_ts"][11:13]) == hour and e["event_ts"][:10] == f.parent.name
            seen_ids.add(e["event_id"])
    assert all(hours == set(range(8, 22)) for hours in seen_hours.values())
    assert sum(1 for _ in heavy.landing_dir.rglob("*.jsonl")) == heavy.pos_files


def _utc_offset(naive: datetime) -> float:
    """mtimes are UTC epochs; datetime.timestamp() on a naive datetime assumes local time."""
    return naive.timestamp() - naive.replace(tzinfo=__import__("datetime").timezone.utc).timestamp()


def _parses(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"scale_factor": 0}, "scale_factor"),
        ({"scale_factor": -1.0}, "scale_factor"),
        ({"scale_factor": float("nan")}, "scale_factor"),
        ({"days": 0}, "days"),
        ({"days": 1.5}, "days"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_generate_arguments_raise(tmp_path, kwargs, name):
    with pytest.raises(ParameterError) as err:
        generate(tmp_path, **kwargs)
    assert err.value.name == name and "must be" in str(err.value)
    assert not (tmp_path / "sources").exists()


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"null_keys": -0.1}, "null_keys"),
        ({"duplicate_records": 0.6}, "duplicate_records"),
        ({"late_arriving": True}, "late_arriving"),
        ({"schema_change_day": -1}, "schema_change_day"),
        ({"schema_change_day": 2.5}, "schema_change_day"),
        ({"typo_rate": 0.1}, "typo_rate"),
    ],
)
def test_bad_defect_rates_raise(overrides, name):
    with pytest.raises(ParameterError) as err:
        DefectRates.load(**overrides)
    assert err.value.name == name


def test_defaults_come_from_the_documented_file():
    rates = DefectRates.load()
    assert rates == DefectRates(
        duplicate_records=0.01, null_keys=0.002, negative_quantities=0.002, price_out_of_range=0.001,
        unparseable_dates=0.002, unknown_references=0.002, late_arriving=0.01, customer_changes=0.002,
        price_changes=0.005, schema_change_day=20,
    )  # fmt: skip
    assert DefectRates.none().schema_change_day == 20 and DefectRates.none().null_keys == 0
    doc = yaml.safe_load(DEFECTS_FILE.read_text())["defects"]
    for spec in doc.values():
        assert (
            spec["handling"] in {"repaired", "quarantined", "tracked"} and spec["rule"] and spec["looks_like"]
        )
    text = DEFECTS_FILE.read_text()
    for name in doc:  # every defect has a comment block right under its name
        assert re.search(rf"^  {name}:\n    # ", text, re.M), name
