"""Spend budgets of `alerts.budgets` (params/<env>.yaml): validated with the rest, pro rata to a period."""

from __future__ import annotations

import pytest

from retail_lakehouse.alerts.config import load_config, parse_config
from retail_lakehouse.core.errors import ConfigError


@pytest.mark.parametrize("env", ["local", "dev", "qa", "prod"])
def test_every_env_declares_a_budget(env):
    assert load_config(env).budgets.get("weekly_usd", 0) > 0


def test_budget_for_a_period_takes_the_closest_declared_one_pro_rata():
    config = parse_config({"budgets": {"weekly_usd": 70, "monthly_usd": 300}}, "local")
    assert config.budget_for(7) == (70.0, "weekly_usd 70")
    assert config.budget_for(30) == (300.0, "monthly_usd 300")
    assert config.budget_for(14) == (140.0, "weekly_usd 70 x 14/7 days")
    assert parse_config({}, "local").budget_for(7) is None


def test_malformed_budgets_are_reported_with_the_other_problems():
    with pytest.raises(ConfigError) as err:
        parse_config({"budgets": {"weekly_usd": "lots", "yearly_usd": 5}, "wait_seconds": -1}, "local")
    text = str(err.value)
    assert "weekly_usd: 'lots' is not a number" in text and "budgets.yearly_usd: unknown budget" in text
    assert "wait_seconds" in text
