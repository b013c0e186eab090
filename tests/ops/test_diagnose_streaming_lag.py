"""diagnose_streaming_lag: analysis on small progress frames; the stream_lag drill diagnosed by the notebook."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from retail_lakehouse.ops import diagnose_streaming_lag as lag
from tests.ops._helpers import audit_rows, run_notebook


def _progress(runs: list[list[int]], duration_ms: int = 500, trigger_ms: int = 60000) -> pd.DataFrame:
    rows, batch = [], 0
    for r, backlog in enumerate(runs):
        for outstanding in backlog:
            rows.append({"id": "s", "runId": f"r{r}", "name": "pos_events",
                         "timestamp": pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(seconds=batch),
                         "batchId": batch, "numInputRows": 20, "inputRowsPerSecond": 0.3,
                         "processedRowsPerSecond": 40.0, "batchDuration": duration_ms, "triggerInterval": trigger_ms,
                         "numFilesOutstanding": outstanding, "numBytesOutstanding": outstanding * 100,
                         "numRowsBehind": outstanding * 20, "sources": "[]"})
            batch += 1
    return pd.DataFrame(rows)


def test_lag_in_minutes_is_rows_behind_over_the_pace():
    """Rows behind / rows taken per trigger x trigger interval: 600 rows at 100 rows per 60 s trigger = 6 min."""
    assert lag._minutes(600, 100, 60_000) == 6.0
    assert lag._minutes(600, 0, 60_000) is None


def test_growing_backlog_is_lag_with_a_raise_of_max_files():
    p = _progress([[2, 1, 0], [4, 3, 2, 1, 0], [6, 5, 4, 3, 2, 1, 0]])
    m = lag.analyze(p)
    assert m["lagging"] and m["files_outstanding_peak"] == 6 and m["backlog_trend_per_run"] > 0
    assert lag._max_files(p) == 1
    recs = lag.recommend(m, max_files_per_trigger=1)
    assert "maxFilesPerTrigger from 1" in recs["recommendation"].iloc[0]


def test_slow_batches_recommend_a_bigger_cluster():
    p = _progress([[5, 5, 6, 7]], duration_ms=90000)
    recs = lag.recommend(lag.analyze(p), max_files_per_trigger=10)
    assert any("slower than the trigger" in r for r in recs["recommendation"])


def test_keeping_up_is_not_lag():
    m = lag.analyze(_progress([[0], [0], [0]]))
    assert not m["lagging"]
    assert "No change" in lag.recommend(m, max_files_per_trigger=50)["recommendation"].iloc[0]


def test_checkpoint_health():
    p = _progress([[1, 0]])
    assert lag.checkpoint_health(p)["healthy"]
    p.loc[1, "batchId"] = 0
    assert lag.checkpoint_health(p)["healthy"] is False


def test_stream_lag_drill_diagnosed(demo_lakehouse, tmp_path):
    from retail_lakehouse.sandbox import drills

    result = drills.run("stream_lag")
    with pytest.raises(Exception, match="stream"):
        run_notebook("diagnose_streaming_lag", tmp_path, env="local", stream="pos_events; DROP TABLE x")
    text = run_notebook("diagnose_streaming_lag", tmp_path, **result.parameters)
    assert "DIAGNOSIS (backlog_growing)" in text
    assert "maxFilesPerTrigger from 1" in text
    summary = text[text.index("===== SUMMARY of diagnose_streaming_lag: DIAGNOSED ====="):]
    assert re.search(r"SYMPTOM    stream pos_events behind by about [0-9.]+ minutes at its peak", summary)
    assert "papermill ops_notebooks/diagnose_streaming_lag.ipynb" in summary
    assert "DRY_RUN" in set(audit_rows("diagnose_streaming_lag")["outcome"])
