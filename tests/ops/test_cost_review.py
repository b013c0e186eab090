"""cost_review: summaries and recommendations on small frames; the cost_spike drill shown by the notebook."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from retail_lakehouse.ops import cost_review
from tests.ops._helpers import audit_rows, run_notebook


def _records() -> pd.DataFrame:
    day = dt.date(2024, 1, 1)
    rows = []
    for i, (job, cost) in enumerate([("a", 1.0), ("a", 1.0), ("a", 3.0), ("b", 0.5)]):
        rows.append({"usage_date": day, "job_id": job, "job_name": job, "job_run_id": str(i), "cluster_id": f"c{i}",
                     "node_type": "i3.xlarge", "sku_name": "PREMIUM_JOBS_COMPUTE", "dbus": cost / 0.15,
                     "list_cost": cost})
    return pd.DataFrame(rows)


def test_summarize_and_extra_runs():
    parts = cost_review.summarize(_records())
    assert parts["by_job"].iloc[0]["job_name"] == "a" and parts["by_job"].iloc[0]["list_cost"] == 5.0
    extra = cost_review.extra_runs(_records())
    assert extra.iloc[0]["extra_runs"] == 2 and extra.iloc[0]["extra_cost"] == 2.0  # the cheapest two


def test_recommendations_with_savings():
    parts = cost_review.summarize(_records())
    clusters = pd.DataFrame([{"kind": "job cluster", "job_name": "a", "cluster": "k", "node_type": "i3.xlarge",
                              "workers": 2, "availability": "ON_DEMAND", "spot": False, "auto_termination": "n/a",
                              "problem": "no spot workers"}])
    storage = pd.DataFrame([{"table": "t", "layer": "gold", "size_mb": 10.0, "files": 5, "vacuum_files": 2,
                             "vacuum_reclaim_mb_est": 4.0}])
    recs = cost_review.recommend(by_cluster=parts["by_cluster"], extra=cost_review.extra_runs(_records()),
                                 clusters=clusters, storage_frame=storage, period_days=1)
    by_start = {r.split(" ")[0]: s for r, s in zip(recs["recommendation"], recs["est_monthly_saving_usd"], strict=True)}
    assert by_start["Stop"] == pytest.approx(60.0)  # 2 extra runs, $2 a day, 30 days
    assert by_start["Use"] == pytest.approx(90.0)  # $5 of on-demand compute x VM ratio 1 x 60% spot discount x 30
    assert list(recs["est_monthly_saving_usd"]) == sorted(recs["est_monthly_saving_usd"], reverse=True)
    assert any("spot" in r for r in recs["recommendation"]) and any("VACUUM" in r for r in recs["recommendation"])
    # The top spender is the job over all its clusters ($5 of $5.50 on clusters c0..c2): the diagnosis's share.
    top = recs[recs["recommendation"].str.startswith("Top spender")].iloc[0]
    assert top["recommendation"].startswith("Top spender: a on") and top["evidence"] == "$5.0000 of $5.5000 in the period (91%)"


def test_week_over_week_per_job():
    """This period against the previous one of the same length: per job, and in the summary."""
    now = _records()
    before = now[now["job_name"] == "a"].assign(list_cost=1.0)  # a: $3 then, $5 now; b: new
    empty = pd.DataFrame()
    r = cost_review.CostReview(dt.date(2024, 1, 8), dt.date(2024, 1, 14), now, empty, empty, empty, empty, empty,
                               empty, empty, pd.DataFrame(columns=["rank", "recommendation", "est_monthly_saving_usd",
                                                                   "evidence"]), "d", previous=before)
    cmp = r.comparison().set_index("job_name")
    assert cmp.loc["a"].tolist() == [5.0, 3.0, 2.0] and cmp.loc["b"].tolist() == [0.5, 0.0, 0.5]
    assert r.previous_cost == 3.0
    s = cost_review.summary_of(r, env="prod")
    assert "$5.5000 in 2024-01-08..2024-01-14 vs $3.0000 in the previous 7 days (+83%)" in s.evidence
    assert "-p ops_run_id <OPS_RUN_ID>" in s.next_step and "-p start_date <START_DATE>" in s.next_step


def test_cost_spike_shown(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills

    result = drills.run("cost_spike")
    with pytest.raises(Exception, match="before the start"):
        run_notebook("cost_review", tmp_path, env="local", start_date="2024-02-01", end_date="2024-01-01")
    text = run_notebook("cost_review", tmp_path, **result.parameters)
    assert "top spender" in text and result.facts["job"] in text
    assert "===== SUMMARY of cost_review: DIAGNOSED =====" in text and "in the previous 7 days" in text
    assert f"Stop the extra runs: {result.facts['job']} (+{result.facts['extra_runs']} runs)" in text
    # The clusters table's `problem` column ("no spot workers") sits mid-table, which pandas' text repr
    # elides; the recommendation drawn from it is in the text.
    assert f"Use spot workers (availability SPOT_WITH_FALLBACK, first_on_demand 1) for {result.facts['job']}" in text
    assert "DRY_RUN" in set(audit_rows("cost_review")["outcome"])


def test_run_history_refuses_the_future_and_a_job_never_run():
    from retail_lakehouse.core.errors import ParameterError
    from retail_lakehouse.sandbox import run_history

    today = dt.datetime.now(dt.UTC).date()
    with pytest.raises(ParameterError, match="before today"):
        run_history.backfill("retail_daily", start=today - dt.timedelta(days=1), end=today)
    with pytest.raises(ParameterError, match="before the start"):
        run_history.backfill("retail_daily", start=today - dt.timedelta(days=1), end=today - dt.timedelta(days=2))
    with pytest.raises(ParameterError, match="lakehouse run no_such_job"):
        run_history.backfill("no_such_job", start=today - dt.timedelta(days=2), end=today - dt.timedelta(days=1))


def test_cost_spike_week_over_week(demo_lakehouse, tmp_path):
    """The drill's sandbox has a past: last week's nightly runs are billed, the ad-hoc job is new this week."""
    import re

    from retail_lakehouse.databricks.workspace import connect
    from retail_lakehouse.sandbox import drills, run_history

    result = drills.run("cost_spike")
    today = dt.datetime.now(dt.UTC).date()
    # Idempotent: one copy of the nightly chain a day, however often the drill ran (test_cost_spike_shown too).
    parents = [r for r in run_history.history_runs() if "." not in r]
    assert len(parents) == 13
    assert run_history.backfill("retail_daily", start=today - dt.timedelta(days=13),
                                end=today - dt.timedelta(days=1)) == []

    start, end = dt.date.fromisoformat(result.parameters["start_date"]), dt.date.fromisoformat(result.parameters["end_date"])
    r = cost_review.review(connect("local"), start, end, env="local", include_storage=False)
    assert r.previous is not None and r.previous_cost > 0
    assert r.previous.groupby("job_name")["job_run_id"].nunique()["retail_ingestion"] == 7  # one a day, last week
    cmp = r.comparison().set_index("job_name")
    assert cmp.loc[result.facts["job"], "previous_period_usd"] == 0.0 and cmp.loc[result.facts["job"], "this_period_usd"] > 0
    assert cmp.loc["retail_ingestion", "previous_period_usd"] > 0 and cmp.loc["retail_ingestion", "this_period_usd"] > 0
    assert cmp.index[0] == result.facts["job"]  # the biggest change

    text = run_notebook("cost_review", tmp_path, **result.parameters, include_storage=False)
    evidence = next(line for line in text.splitlines() if line.startswith("EVIDENCE"))
    assert re.search(r"vs \$\d+\.\d{4} in the previous 7 days \(\+\d+%\); biggest change drill_adhoc_report", evidence)
    assert "no usage" not in evidence
