"""Local workspace overhead: `SELECT 1` round trip and a 1M-row result, through the REST API vs engine.sql.

Run: .venv/bin/python tests/benchmarks/bench_workspace.py  (not collected by pytest; prints JSON)
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time


def _median(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    os.environ.setdefault("LAKEHOUSE_HOME", tempfile.mkdtemp(prefix="bench-workspace-"))
    from retail_lakehouse import engine, local_workspace
    from retail_lakehouse.workspace import connect, run_sql

    local_workspace.start()
    w = connect("local")
    big = "SELECT id, id * 2 AS x FROM range(1000000)"
    engine.sql("SELECT 1").collect()  # warm up the engine and the session
    run_sql(w, "SELECT 1")
    result = {
        "select1_workspace_ms": 1000 * _median(lambda: run_sql(w, "SELECT 1"), 20),
        "select1_engine_ms": 1000 * _median(lambda: engine.sql("SELECT 1").toPandas(), 20),
        "rows_1m_workspace_s": _median(lambda: run_sql(w, big), 3),
        "rows_1m_engine_s": _median(lambda: engine.sql(big).toPandas(), 3),
        "chunk_rows": 10_000,
    }
    local_workspace.start(chunk_rows=100_000)
    w = connect("local")
    result["rows_1m_workspace_100k_chunks_s"] = _median(lambda: run_sql(w, big), 3)
    result["rows_1m_ratio"] = result["rows_1m_workspace_s"] / result["rows_1m_engine_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=1))
    local_workspace.stop()
    engine.stop_local_server()


if __name__ == "__main__":
    main()
