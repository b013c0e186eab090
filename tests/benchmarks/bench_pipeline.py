"""Pipeline speed and memory: full load, daily increment, scale factor 10, rows/s per layer.

Baseline, same run: one pass with cold kernels (`LAKEHOUSE_WARM_KERNELS=0`, a fresh interpreter
per task as papermill alone starts them) against the default warm, forked kernels.

Goals (issue 3): scale factor 1 x 30 days, all four jobs (retail_daily): median <= 90 s; one new day
on top of 30: <= 15 % of the full load; scale factor 10: time grows no more than linearly, peak
memory <= 4 GB (the whole process tree: runner, embedded engine, notebook kernels).

    python tests/benchmarks/bench_pipeline.py [--runs 3] [--scale-factor 1] [--days 30] [--large 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_home, report  # noqa: E402

LAKEHOUSE = str(ROOT / ".venv" / "bin" / "lakehouse")


def _tree_rss(root: int) -> int:
    """Resident memory of a process and all its descendants, in bytes, plus the kernel fork server's
    tree (its kernels run the job's notebooks, but are not the runner's descendants)."""
    from retail_lakehouse.jobs._zygote import running_servers

    return sum(_one_tree_rss(pid) for pid in {root, *(s["pid"] for s in running_servers())})


def _one_tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def timed(cmd: list[str], home: Path, extra_env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall time, peak tree RSS and output of a command."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env["LAKEHOUSE_HOME"] = str(home)
    env.update(extra_env or {})
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return elapsed, peak, out


def layer_rates(home: Path, run_id: str) -> dict[str, float]:
    """Rows per second through each layer, from the last retail_daily run's task times and row counts."""
    env = {**os.environ, "LAKEHOUSE_HOME": str(home)}
    env.pop("SPARK_REMOTE", None)
    probe = r"""
import json
from retail_lakehouse import engine
q = lambda s: engine.sql(s).collect()[0][0]
rows = {
 'bronze': sum(q(f"SELECT count(*) FROM retail_datalake.local_bronze.{t}") for t in ['customers','products','stores','orders','order_items','pos_events']),
 'silver': sum(q(f"SELECT count(*) FROM retail_datalake.local_silver.{t}") for t in ['customers','products','stores','orders','order_items','pos_transactions']),
 'gold': sum(q(f"SELECT count(*) FROM retail_datalake.local_gold.{t}") for t in ['dim_customer','dim_product','dim_store','fact_sales','agg_daily_sales']),
}
secs = {r[0]: r[1] for r in engine.sql(
 "SELECT CASE WHEN task_key LIKE 'ingest%' THEN 'bronze' WHEN task_key LIKE 'clean%' THEN 'silver' "
 "WHEN task_key LIKE 'build%' THEN 'gold' END AS layer, sum(duration_seconds) "
 "FROM retail_datalake.local_monitoring.job_runs WHERE state = 'SUCCESS' AND task_key IS NOT NULL "
 "AND run_id LIKE :prefix GROUP BY 1", {"prefix": RUN_ID + ".%"}).collect() if r[0]}
print(json.dumps({k: round(rows[k] / secs[k], 1) for k in rows if secs.get(k)}))
"""
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", f"RUN_ID = {run_id!r}\n" + probe], env=env, capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": out.stderr[-500:]}


def full_and_increment(scale_factor: float, days: int, extra_env: dict[str, str] | None = None) -> dict:
    home = fresh_home(f"sf{scale_factor}")
    gen = [LAKEHOUSE, "generate", "--scale-factor", str(scale_factor), "--days", str(days)]
    gen_s, _, _ = timed(gen, home)
    full_s, full_peak, out = timed([LAKEHOUSE, "run", "retail_daily"], home, extra_env)
    run_id = re.search(r"job retail_daily run (\S+):", out).group(1)
    rates = layer_rates(home, run_id)
    timed([LAKEHOUSE, "generate", "--scale-factor", str(scale_factor), "--days", str(days + 1)], home)
    inc_s, inc_peak, _ = timed([LAKEHOUSE, "run", "retail_daily"], home, extra_env)
    return {
        "generate_s": round(gen_s, 2),
        "full_s": round(full_s, 2),
        "increment_s": round(inc_s, 2),
        "peak_rss_mb": round(max(full_peak, inc_peak) / 2**20),
        "rows_per_s": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale-factor", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--large", type=float, default=10.0, help="scale factor of the growth run; 0 skips it")
    parser.add_argument("--no-baseline", action="store_true", help="skip the cold-kernel baseline run")
    args = parser.parse_args()
    runs = [full_and_increment(args.scale_factor, args.days) for _ in range(args.runs)]
    fulls = sorted(r["full_s"] for r in runs)
    incs = sorted(r["increment_s"] for r in runs)
    full_median, inc_median = fulls[len(fulls) // 2], incs[len(incs) // 2]
    figures = {
        "scale_factor": args.scale_factor,
        "days": args.days,
        "full_load_median_s": full_median,
        "increment_median_s": inc_median,
        "increment_ratio": round(inc_median / full_median, 3),
        "runs": runs,
    }
    if not args.no_baseline:
        # The same run with a fresh interpreter per task, as papermill alone starts kernels.
        cold = full_and_increment(args.scale_factor, args.days, {"LAKEHOUSE_WARM_KERNELS": "0"})
        figures["cold_kernels"] = cold
        figures["warm_vs_cold_full"] = round(full_median / cold["full_s"], 3)
    if args.large:
        large = full_and_increment(args.large, args.days)
        figures["large"] = {"scale_factor": args.large, **large}
        figures["growth_ratio"] = round(large["full_s"] / full_median, 2)
        figures["growth_vs_linear"] = round(large["full_s"] / (full_median * args.large / args.scale_factor), 3)
    report("pipeline", figures)


if __name__ == "__main__":
    main()
