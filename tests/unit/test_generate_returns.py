"""The `returns` source: absent before `returns_day`, then daily returns of earlier orders with defects;
the other tables are the same as a run without it."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from retail_lakehouse.sandbox.generate import DefectRates, generate


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def with_returns(tmp_path_factory):
    rates = DefectRates.load(returns_day=2, return_defects=0.4)
    return generate(tmp_path_factory.mktemp("returns"), scale_factor=0.2, days=4, defects=rates)


def test_no_returns_table_before_its_day(tmp_path):
    result = generate(tmp_path, scale_factor=0.05, days=2, defects=DefectRates.load(returns_day=2))
    tables = {r[0] for r in _rows(result.oltp_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "returns" not in tables and "returns" not in result.rows


def test_returns_reference_earlier_orders_from_their_day_on(with_returns):
    db = with_returns.oltp_path
    assert with_returns.rows["returns"] == _rows(db, "SELECT count(*) FROM returns")[0][0] > 0
    first = _rows(db, "SELECT min(updated_at) FROM returns")[0][0]
    assert first >= "2024-01-03 00:00:00"  # day index 2
    known = {r[0] for r in _rows(db, "SELECT order_id FROM orders")}
    refs = [r[0] for r in _rows(db, "SELECT order_id FROM returns")]
    unknown = [o for o in refs if o not in known]
    assert all(o >= 9_000_000 for o in unknown)
    assert len(unknown) == with_returns.defects["returns.unknown_references"]


def test_defect_counts_match_the_rows(with_returns):
    db, d = with_returns.oltp_path, with_returns.defects
    assert _rows(db, "SELECT count(*) FROM returns WHERE return_id IS NULL")[0][0] == d["returns.null_keys"]
    assert _rows(db, "SELECT count(*) FROM returns WHERE refund_amount < 0")[0][0] == d["returns.negative_amounts"]
    dup = _rows(db, "SELECT count(*) - count(DISTINCT return_id) FROM returns WHERE return_id IS NOT NULL")[0][0]
    assert dup == d["returns.duplicate_records"]
    assert sum(v for k, v in d.items() if k.startswith("returns.")) > 0


def test_other_tables_do_not_change(tmp_path):
    """The returns stream draws from its own seeds: orders, lines, customers and POS are as without it."""
    late = generate(tmp_path / "a", scale_factor=0.05, days=3, defects=DefectRates.load(returns_day=50))
    early = generate(tmp_path / "b", scale_factor=0.05, days=3, defects=DefectRates.load(returns_day=1))
    for table in ("customers", "products", "stores", "orders", "order_items"):
        dump = f"SELECT * FROM {table} ORDER BY rowid"
        assert _rows(late.oltp_path, dump) == _rows(early.oltp_path, dump), table
    assert {k: v for k, v in early.rows.items() if k != "returns"} == late.rows
    pos = sorted(p.relative_to(late.landing_dir) for p in late.landing_dir.rglob("*.jsonl"))
    assert pos == sorted(p.relative_to(early.landing_dir) for p in early.landing_dir.rglob("*.jsonl"))


def test_clean_rates_keep_the_returns_day():
    assert DefectRates.none().returns_day == 10 and DefectRates.none().return_defects == 0
    assert replace(DefectRates.none(), returns_day=3).returns_day == 3


def test_the_onboarding_rehearsal_generates_past_the_returns_day():
    from retail_lakehouse.ops.onboard_source import REHEARSAL_DAYS

    assert DefectRates.load().returns_day < REHEARSAL_DAYS
