"""Local workspace overhead: `SELECT 1` round trip and a 1M-row result, through the REST API vs the engine.

Goals (issue 4): `SELECT 1` through `workspace.run_sql` (real databricks-sdk, INLINE) <= 50 ms over
`engine.sql(...).toPandas()`; a 1,000,000-row result through chunks (`run_sql`'s choice for such a
query: EXTERNAL_LINKS + ARROW_STREAM, chunks downloaded in parallel) <= 3x the engine directly.

Each workspace run is timed next to an engine run in the same round, so that the ratio compares
figures taken under the same load (the machine's cores are shared). The INLINE (JSON_ARRAY) figure
for the same result is printed for comparison.

Run: .venv/bin/python tests/benchmarks/bench_workspace.py  (not collected by pytest; prints JSON and
writes results/workspace.json). BENCH_RUNS sets the rounds of the 1M-row measure (default 5).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_home, report  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SMALL_RUNS = 20
BIG = "SELECT id, id * 2 AS x FROM range(1000000)"


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _rounds(engine_fn, workspace_fn, runs: int) -> tuple[list[float], list[float]]:
    """Alternate engine and workspace runs; (engine times, workspace times)."""
    engine_times, workspace_times = [], []
    for _ in range(runs):
        engine_times.append(_timed(engine_fn))
        workspace_times.append(_timed(workspace_fn))
    return engine_times, workspace_times


def main() -> None:
    os.environ.setdefault("LAKEHOUSE_HOME", str(fresh_home("workspace")))
    from retail_lakehouse import engine
    from retail_lakehouse import local as local_workspace
    from retail_lakehouse.databricks.statements import run_sql
    from retail_lakehouse.databricks.workspace import connect

    load_before = os.getloadavg()[0]
    local_workspace.start()
    w = connect("local")
    engine.sql("SELECT 1").toPandas()  # warm up the engine, the session and the client
    run_sql(w, "SELECT 1")
    run_sql(w, BIG)

    e1, w1 = _rounds(lambda: engine.sql("SELECT 1").toPandas(), lambda: run_sql(w, "SELECT 1"), SMALL_RUNS)
    eb, wb = _rounds(lambda: engine.sql(BIG).toPandas(), lambda: run_sql(w, BIG), RUNS)
    inline = [_timed(lambda: run_sql(w, BIG, disposition="INLINE")) for _ in range(max(1, RUNS // 2))]
    rows = len(run_sql(w, BIG))

    figures = {
        "select1_engine_ms": round(1000 * statistics.median(e1), 1),
        "select1_workspace_ms": round(1000 * statistics.median(w1), 1),
        "select1_overhead_ms": round(1000 * (statistics.median(w1) - statistics.median(e1)), 1),
        "select1_runs": SMALL_RUNS,
        "rows_1m_engine_s": round(statistics.median(eb), 3),
        "rows_1m_workspace_s": round(statistics.median(wb), 3),
        "rows_1m_ratio": round(statistics.median(wb) / statistics.median(eb), 2),
        "rows_1m_ratio_per_round": [round(b / a, 2) for a, b in zip(eb, wb, strict=True)],
        "rows_1m_runs": RUNS,
        "rows_1m_fetch": "EXTERNAL_LINKS + ARROW_STREAM (run_sql auto)",
        "rows_1m_inline_json_s": round(statistics.median(inline), 3),
        "rows_1m_inline_json_ratio": round(statistics.median(inline) / statistics.median(eb), 2),
        "rows_fetched": rows,
        "load_average_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    report("workspace", figures)
    local_workspace.stop()
    engine.stop_local_server()


if __name__ == "__main__":
    main()
