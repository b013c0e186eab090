"""The runbook's advice is right and agrees with itself: broadcast threshold, maxFilesPerTrigger rule,
retry counts in the chapters, and the charts' colours (success green, failure red, one colour per job)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from retail_lakehouse.ops import charts
from retail_lakehouse.ops import diagnose_slow_query as dsq
from retail_lakehouse.ops import diagnose_streaming_lag as lag

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
MB = 1024 * 1024

# ----------------------------------------------------------------------------- broadcast joins


def _recommend(size: int) -> pd.DataFrame:
    return dsq.recommend(
        table="t", detail={"numFiles": 400, "sizeInBytes": size}, files=dsq.file_size_summary([size // 400] * 400),
        skew={"skew_ratio": 1.0, "partitions": 1}, filters={"customer_id": 3}, partition_by=[], zorder_by=[],
        writes_since_optimize=5, slow_queries=1)


def test_broadcast_threshold_is_sparks_default():
    assert dsq.BROADCAST_THRESHOLD_BYTES == 10 * MB == 10485760
    assert dsq.BROADCAST_RAISE_MAX_BYTES <= 512 * MB  # "a few hundred MB at most"


def test_small_table_broadcast_advice_names_the_10_mb_default():
    rec, evidence = dsq.broadcast_advice("t", 4 * MB)
    assert "autoBroadcastJoinThreshold" in rec and "10.0 MB" in rec and "10485760" in evidence
    assert "GB" not in rec + evidence


def test_medium_table_raise_is_modest_with_the_memory_caveat():
    rec, _ = dsq.broadcast_advice("t", 60 * MB)
    assert "over the 10.0 MB default" in rec and "memory" in rec
    raised = float(re.search(r"to ([\d.]+) MB", rec).group(1))
    assert 60 <= raised <= dsq.BROADCAST_RAISE_MAX_BYTES / MB


@pytest.mark.parametrize("size", [dsq.BROADCAST_RAISE_MAX_BYTES + 1, 5 * 1024 * MB, 9 * 1024 * MB, 10**13])
def test_large_table_gets_no_broadcast_advice(size):
    assert dsq.broadcast_advice("t", size) is None
    text = " ".join(_recommend(size)["recommendation"]) + " ".join(_recommend(size)["evidence"])
    assert "broadcast" not in text.lower()
    assert not re.search(r"\d\s*GB[^.]*broadcast|broadcast[^.]*\d\s*GB", text, re.IGNORECASE)


def test_zorder_is_advised_once():
    recs = _recommend(4 * MB)
    texts = list(recs["recommendation"])
    assert sum("z-order" in r.lower() or "zorder" in r.lower() for r in texts) == 1
    assert texts[0].startswith("OPTIMIZE t ZORDER BY (customer_id)")


# ----------------------------------------------------------------------------- maxFilesPerTrigger


def test_max_files_rule_is_bounded():
    assert lag.max_files_to_catch_up(1, 6) == 1 + 6 // lag.CATCH_UP_TRIGGERS
    assert lag.max_files_to_catch_up(50, 0) == 51  # at least one more than today
    assert lag.max_files_to_catch_up(50, 10**6) == lag.MAX_FILES_PER_TRIGGER_CAP == 1000
    assert lag.max_files_to_catch_up(10, 30, growth_per_batch=5) == 10 + 5 + 30 // lag.CATCH_UP_TRIGGERS


def test_recommendation_uses_the_rule():
    measures = {"batches": 6, "files_outstanding_peak": 90, "trigger_interval_ms": 60000, "batches_over_trigger": 0,
                "lagging": True, "backlog_at_run_start": [30, 60, 90], "backlog_trend_per_run": 30.0,
                "files_trend_per_batch": 0.0, "processed_rows_per_s": 1.0, "input_rows_per_s": 0.5,
                "mean_batch_ms": 20.0, "files_outstanding_last": 90}
    text = lag.recommend(measures, max_files_per_trigger=20)["recommendation"].iloc[0]
    assert f"from 20 to {lag.max_files_to_catch_up(20, 90)}" in text
    assert f"within {lag.CATCH_UP_TRIGGERS} triggers" in text


def test_troubleshooting_chapter_states_the_same_rule():
    text = (BOOK / "troubleshooting.md").read_text()
    section = text[text.index("(streaming-lag)="):]
    assert "max_files_to_catch_up" in section
    within = {int(n) for n in re.findall(r"within (\d+) triggers", section)}
    assert within == {lag.CATCH_UP_TRIGGERS}
    assert f"at most {lag.MAX_FILES_PER_TRIGGER_CAP}" in section
    # No hand-written value to copy: the commands take the diagnosis' number.
    assert not re.search(r"max_files_per_trigger=\d", text)
    assert not re.search(r"maxFilesPerTrigger[^.\n]*\bfrom \d+ to \d+", text)


# ----------------------------------------------------------------------------- retries in the chapters

_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10}
_NUMBER = r"(\d+|" + "|".join(_WORDS) + r")"
_ATTEMPTS = re.compile(_NUMBER + r"\s+(?:attempts?|tries)\b", re.IGNORECASE)
_RETRIES = [
    re.compile(_NUMBER + r"\s+(?:retries|retry)\b", re.IGNORECASE),
    re.compile(r"\bretr(?:y|ies|ied)\s+(?:up to\s+)?" + _NUMBER + r"\s+times\b", re.IGNORECASE),
    re.compile(r"\bmax_retries\W{1,3}" + _NUMBER, re.IGNORECASE),
    re.compile(r"\bretries\W{1,3}" + _NUMBER + r"\b(?!\s*(?:minutes|seconds|s\b))", re.IGNORECASE),
]
_EVERY = re.compile(r"\b(every|each|all)\s+(task|job)s?\b", re.IGNORECASE)


def _bundle_retries() -> list[int]:
    """Each task's retries as Databricks applies them (no `max_retries`: no retry)."""
    from retail_lakehouse.databricks.bundle import load_bundle

    return [t.max_retries or 0 for job in load_bundle().jobs.values() for t in job.tasks if not t.run_job]


def _dag_retries() -> set[int]:
    """Retries the Airflow DAGs declare (`RETRIES` or a literal `retries=`)."""
    found: set[int] = set()
    for path in (ROOT / "airflow" / "dags").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                    isinstance(t, ast.Name) and t.id == "RETRIES" for t in node.targets):
                found.add(int(node.value.value))
            if isinstance(node, ast.keyword) and node.arg == "retries" and isinstance(node.value, ast.Constant):
                found.add(int(node.value.value))
    return found


def _stated(paragraph: str) -> list[tuple[str, int, str]]:
    """(kind, number, text) of every retry or attempt count a paragraph states."""
    out = []
    for kind, patterns in (("attempts", [_ATTEMPTS]), ("retries", _RETRIES)):
        for pattern in patterns:
            for m in pattern.finditer(paragraph):
                raw = m.group(1).lower()
                out.append((kind, _WORDS.get(raw) or int(raw), m.group(0)))
    return out


def test_declared_retries_are_read():
    assert _bundle_retries() and _dag_retries()


def test_retry_counts_in_the_chapters_match_the_definitions():
    """A count in a paragraph about Airflow must be the DAGs'; any other, databricks.yml's (for every
    task when the paragraph says every/each/all tasks)."""
    bundle, dags = _bundle_retries(), _dag_retries()
    wrong = []
    for path in sorted(BOOK.glob("*.md")):
        for paragraph in re.split(r"\n\s*\n", path.read_text()):
            airflow = bool(re.search(r"airflow|\bDAG", paragraph, re.IGNORECASE))
            declared = dags if airflow else (set(bundle) if not _EVERY.search(paragraph) else
                                             (set(bundle) if len(set(bundle)) == 1 else set()))
            for kind, n, text in _stated(paragraph):
                retries = n - 1 if kind == "attempts" else n
                if retries not in declared:
                    wrong.append(f"{path.name}: {text!r} ({'DAGs' if airflow else 'databricks.yml'} declare "
                                 f"{sorted(set(dags if airflow else bundle))} retries)")
    assert not wrong, "retry counts stated by hand that the definitions do not declare:\n" + "\n".join(wrong)


def test_the_old_hand_written_counts_are_caught():
    bundle = _bundle_retries()
    if len(set(bundle)) > 1:  # not every task retries alike: "every task ... 3 attempts" cannot be true
        para = "Every task already retried: 3 attempts with exponential backoff."
        assert _EVERY.search(para) and _stated(para) == [("attempts", 3, "3 attempts")]


def test_local_runner_retries_like_databricks():
    """A task without max_retries is tried once locally, as on Databricks; a declared count is kept."""
    from retail_lakehouse.databricks.bundle import TaskSpec
    from retail_lakehouse.jobs import runner

    assert runner.attempts(TaskSpec("t")) == 1
    assert runner.attempts(TaskSpec("t", max_retries=2)) == 3
    text = " ".join((BOOK / "failure_handling.md").read_text().split())
    assert "a task without it is tried once, not retried, on Databricks and by `lakehouse run` alike" in text


def test_failure_chapter_points_to_where_retries_are_declared():
    text = (BOOK / "failure_handling.md").read_text()
    assert "max_retries" in text and "databricks.yml" in text and "airflow/dags/_retail_common.py" in text


# ----------------------------------------------------------------------------- charts


def _colors(fig) -> dict[str, str]:
    return {t.name: t.marker.color for t in fig.data}


def test_status_colors_are_green_and_red_whatever_the_spelling():
    m = charts.status_color_map(["SUCCESS", "FAILED", "success", "failed", "PASSED", "STALE", "FRESH", "odd"])
    assert m["SUCCESS"] == m["success"] == m["PASSED"] == m["FRESH"] == charts.SUCCESS
    assert m["FAILED"] == m["failed"] == m["STALE"] == charts.FAILURE
    assert m["odd"] not in (charts.SUCCESS, charts.FAILURE)
    assert charts.SUCCESS.lower() == "#2ca02c" and charts.FAILURE.lower() == "#d62728"  # green, red


def test_job_timeline_success_green_failed_red():
    t0 = pd.Timestamp("2024-01-01")
    frame = pd.DataFrame({"task_key": ["a", "b", "c"], "start": [t0] * 3, "end": [t0 + pd.Timedelta(minutes=1)] * 3,
                          "state": ["SUCCESS", "FAILED", "UPSTREAM_FAILED"]})
    colors = _colors(charts.timeline(frame, x_start="start", x_end="end", y="task_key"))
    assert colors["SUCCESS"] == charts.SUCCESS and colors["FAILED"] == charts.FAILURE
    airflow = frame.assign(state=["success", "failed", "up_for_retry"])
    colors = _colors(charts.timeline(airflow, x_start="start", x_end="end", y="task_key"))
    assert colors["success"] == charts.SUCCESS and colors["failed"] == charts.FAILURE


def test_freshness_and_quality_colours():
    report = pd.DataFrame({"table": ["a", "b", "c"], "hours_since_commit": [1, 50, 0],
                           "status": ["FRESH", "STALE", "MISSING"]})
    colors = _colors(charts.freshness_bar(report, y="hours_since_commit", title="x"))
    assert colors["FRESH"] == charts.SUCCESS and colors["STALE"] == charts.FAILURE
    trend = pd.DataFrame({"day": ["2024-01-01", "2024-01-01", "2024-01-02"], "check_name": ["u", "v", "u"],
                          "check_status": ["FAILED", "WARN", "FAILED"], "results": [2, 1, 3]})
    fig = charts.quality_trend(trend, table="silver.orders")
    assert {t.marker.color for t in fig.data if t.name.startswith("FAILED")} == {charts.FAILURE}
    assert charts.SUCCESS not in {t.marker.color for t in fig.data}


def test_cost_charts_share_job_colours():
    by_day = pd.DataFrame({"day": ["d1", "d1", "d2"], "job_name": ["retail_transformation", "retail_ingestion",
                                                                   "retail_ingestion"], "list_cost": [1.0, 2.0, 3.0]})
    by_cluster = pd.DataFrame({"cluster_id": ["c1", "c2", "c3"], "list_cost": [5.0, 3.0, 1.0],
                               "job_name": ["retail_ingestion", "retail_data_quality_checks", "retail_transformation"]})
    colors = charts.job_color_map(by_day, by_cluster)
    day, cluster = _colors(charts.cost_by_day(by_day, colors)), _colors(charts.cost_by_cluster(by_cluster, colors))
    for job in set(day) & set(cluster):
        assert day[job] == cluster[job] == colors[job]
    assert len(set(colors.values())) == 3


def test_backfill_facets_have_their_own_y_scale():
    days = ["2024-01-01", "2024-01-02"]
    before = pd.DataFrame({"table": ["gold.fact_sales"] * 2 + ["gold.agg_daily_sales"] * 2, "day": days * 2,
                           "rows": [100000, 120000, 3, 4]})
    fig = charts.backfill_rows(before, before.assign(rows=before["rows"] + 1), title="x")
    yaxes = [k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")]
    assert len(yaxes) == 2 and all(fig.layout[k].matches is None for k in yaxes)
    labels = sorted(a.text for a in fig.layout.annotations)
    assert labels == ["gold.agg_daily_sales", "gold.fact_sales"]
    assert all(a.textangle == 0 for a in fig.layout.annotations)
    ys = sorted(a.y for a in fig.layout.annotations)
    assert ys[1] - ys[0] > 0.2  # one label per facet, apart


def test_batch_durations_not_flattened_by_a_long_trigger():
    progress = pd.DataFrame({"batchDuration": [22, 25, 19], "triggerInterval": [60000] * 3})
    fig = charts.batch_durations(progress)
    assert all(s.y0 < 1000 for s in fig.layout.shapes)  # no 60 s line on a 25 ms scale
    assert "60 s" in fig.layout.title.text
    slow = charts.batch_durations(pd.DataFrame({"batchDuration": [900, 1200], "triggerInterval": [1000] * 2}))
    assert any(s.y0 == 1000 for s in slow.layout.shapes)  # the trigger drawn when on the same scale


def test_stream_rates_agree_with_a_lagging_verdict():
    rows, batch = [], 0
    for r, backlog in enumerate([[2, 3, 4], [6, 7, 8]]):
        for outstanding in backlog:
            rows.append({"runId": f"r{r}", "batchId": batch, "numInputRows": 20, "triggerInterval": 10000,
                         "numRowsBehind": outstanding * 20})
            batch += 1
    rates = lag.rates(pd.DataFrame(rows)).dropna()
    assert (rates["arriving_rows_per_s"] > rates["processed_rows_per_s"]).all()
    assert set(rates["processed_rows_per_s"]) == {2.0}
    fig = charts.stream_rates(lag.rates(pd.DataFrame(rows)))
    assert {t.name for t in fig.data} == {"arriving_rows_per_s", "processed_rows_per_s"}


def test_query_axis_labels_are_short():
    queries = pd.DataFrame({"query_id": ["01f0a1b2-c3d4-e5f6-0000-000000000001", "01f0a1b2-c3d4-e5f6-0000-2",
                                         "short"], "duration_ms": [10, 20, 30], "query_text": ["SELECT 1"] * 3})
    labels = charts.query_labels(queries)
    assert len(set(labels)) == 3 and all(len(lbl) <= 9 for lbl in labels)
    fig = charts.query_durations(queries)
    assert list(fig.data[0].x) == labels


def test_ops_notebooks_colour_states_through_the_shared_map():
    for path in sorted((ROOT / "ops_notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        calls = re.findall(r"px\.\w+\((?:[^()]|\([^()]*\))*\)", code)
        for call in calls:
            assert not re.search(r'color="(state|status|check_status|result_state)"', call), (path.name, call)
            assert "color_discrete_map={" not in call, (path.name, "a hand-written colour map", call)
