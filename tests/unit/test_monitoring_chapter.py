"""book/monitoring.md says what the code does: the routing table is that of the committed params,
the SLAs and budgets those declared, every alert source and key prefix is documented."""

from __future__ import annotations

from pathlib import Path

from retail_lakehouse.alerts import SOURCES, load_config
from retail_lakehouse.alerts.routing import routing_table
from retail_lakehouse.core.tables import registry

CHAPTER = (Path(__file__).resolve().parents[2] / "book" / "monitoring.md").read_text()


def test_the_routing_table_is_the_committed_params():
    assert routing_table([load_config(e) for e in ("local", "dev", "qa", "prod")]) in CHAPTER


def test_every_declared_sla_is_in_the_chapter():
    slas = [t for t in registry() if t.sla]
    assert slas
    for t in slas:
        assert f"| `{t.ref}` | {t.sla.hours:g} h |" in CHAPTER, t.ref
        assert t.sla.upstream in CHAPTER


def test_budgets_and_alert_sources_are_documented():
    for env in ("local", "dev", "prod"):
        budgets = load_config(env).budgets
        assert f"{budgets['weekly_usd']:,.0f}" in CHAPTER and f"{budgets['monthly_usd']:,.0f}" in CHAPTER
    for source in SOURCES:
        prefix = {"quality": "quality:<layer>.<table>", "job": "job:<job>", "freshness": "freshness:<table>",
                  "stream_lag": "stream_lag:<stream>", "cost": "cost:<start>..<end>"}[source]  # fmt: skip
        assert f"`{prefix}`" in CHAPTER, source
    assert "_generated/procedures/alerts_review.md" in CHAPTER  # the executed drill run is linked from there
