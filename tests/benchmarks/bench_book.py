"""The runbook site: a full build and a rebuild with nothing changed, through `lakehouse book`.

Goals (issue 6), 2-core machine: full build (demo lakehouse, every drill and its executed ops
notebook, the Airflow example, the Jupyter Book build) <= 4 minutes; rebuild with nothing changed
<= 30 s. Each full build starts from a fresh LAKEHOUSE_HOME with `--clean` (every example run
re-executed, every page rebuilt); each rebuild follows it on the same home.

Note: it builds into the repository's `_build/html` and `book/_generated`, as `make book` does.

    python tests/benchmarks/bench_book.py [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_home, report  # noqa: E402

LAKEHOUSE = str(ROOT / ".venv" / "bin" / "lakehouse")


def timed(args: list[str], home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env["LAKEHOUSE_HOME"] = str(home)
    started = time.perf_counter()
    proc = subprocess.run([LAKEHOUSE, "book", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"lakehouse book {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="full builds (each about 3 minutes)")
    args = parser.parse_args()
    full, rebuild = [], []
    for _ in range(args.runs):
        home = fresh_home("book")
        full.append(round(timed(["--clean"], home), 1))
        rebuild.append(round(timed([], home), 1))
    report(
        "book",
        {
            "full_build_median_s": statistics.median(full),
            "full_build_goal_s": 240,
            "rebuild_median_s": statistics.median(rebuild),
            "rebuild_goal_s": 30,
            "full_build_s": full,
            "rebuild_s": rebuild,
            "load_average": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
