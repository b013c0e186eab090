"""Pipeline speed and memory: full load, daily increment, scale factor 10, rows/s per layer.

Baseline, same run: one pass with cold kernels (`LAKEHOUSE_WARM_KERNELS=0`, a fresh interpreter
per task as papermill alone starts them) against the default warm, forked kernels.

Each pass also runs the job once more with no new data: the increment's fixed cost (the job's shape,
whatever the data), beside the increment, as a ratio of the full load too.

For the full load and the increment of each pass it also reports where the time goes: the critical
path (the longest dependency chain's task times, chained jobs expanded), Spark Connect round trips
(runner vs kernels, counted with `LAKEHOUSE_RPC_LOG`), Delta commits (monitoring tables vs data), CPU
seconds of the runner with its embedded engine (the process and what it reaped: cold kernels too)
and of the warm kernels (each task's `cpu_seconds`), and the load average, since the machine may be
shared: compare ratios taken in the same run.

Goals (issue 3): scale factor 1 x 30 days, all four jobs (retail_daily): median <= 90 s; one new day
on top of 30: <= 15 % of the full load; scale factor 10: time grows no more than linearly, peak
memory <= 4 GB (the whole process tree: runner, embedded engine, notebook kernels).
Goals (issue 17): scale factor 1 increment <= 6 s; scale factor 10 increment <= 10 % of its full load.

    python tests/benchmarks/bench_pipeline.py [--runs 3] [--scale-factor 1] [--days 30] [--large 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_home, report  # noqa: E402

LAKEHOUSE = str(ROOT / ".venv" / "bin" / "lakehouse")


def _tree_rss(root: int) -> int:
    """Resident memory in bytes of a process and all its descendants, plus the kernel fork servers'
    trees (their kernels run the job's notebooks, but are not the runner's descendants), each process
    counted once: a fork server the runner started is also its child (it was counted twice before:
    5.0 instead of 3.5 GB for a full load at scale factor 10 on a cold fork server).

    An upper bound: a page that forked kernels share counts once per kernel (PSS would split it, but
    reading it costs about 36 ms of CPU per sample, too much beside the times measured).
    """
    from retail_lakehouse.jobs._zygote import running_servers

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
    pids: set[int] = set()
    stack = [root, *(s["pid"] for s in running_servers())]
    while stack:
        pid = stack.pop()
        if pid not in pids:
            pids.add(pid)
            stack.extend(children.get(pid, []))
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], home: Path, extra_env: dict[str, str] | None = None) -> tuple[float, int, str, float, int]:
    """Wall time, peak tree RSS, output, CPU seconds (the process and the descendants it reaped) and pid."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env["LAKEHOUSE_HOME"] = str(home)
    env.update(extra_env or {})
    cpu_before = _children_cpu()
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
    return elapsed, peak, out, _children_cpu() - cpu_before, proc.pid


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


def delta_commits(home: Path) -> dict[str, int]:
    """Commits in every Delta log under the warehouse: `schema.table` -> count."""
    counts = {}
    for log in (home / "warehouse").glob("*/*/*/_delta_log"):
        counts[f"{log.parent.parent.name}.{log.parent.name}"] = sum(
            1 for p in log.glob("*.json") if p.stem.isdigit()
        )
    return counts


def critical_path(runs: Path, run_id: str, job_key: str = "retail_daily") -> float:
    """Seconds of the longest dependency chain of a run: the task times along it (every attempt of a
    task), a chained job's task counting as its own run's critical path."""
    from retail_lakehouse.jobs.runner import bundle_for

    bundle = bundle_for(None, "local")

    def job_path(run_dir: Path, key: str) -> float:
        run = json.loads((run_dir / "run.json").read_text())
        spent: dict[str, float] = {}
        child: dict[str, str] = {}
        for t in run["tasks"]:
            spent[t["task_key"]] = spent.get(t["task_key"], 0.0) + t["duration"]
            if t.get("child_run_id"):
                child[t["task_key"]] = t["child_run_id"]
        specs = {t.task_key: t for t in bundle.jobs[key].tasks}
        memo: dict[str, float] = {}

        def finish(task: str) -> float:
            if task not in memo:
                spec = specs[task]
                own = spent.get(task, 0.0)
                if spec.run_job and task in child and (runs / child[task] / "run.json").is_file():
                    own = job_path(runs / child[task], spec.run_job)
                memo[task] = own + max((finish(d) for d in spec.depends_on if d in specs), default=0.0)
            return memo[task]

        return max((finish(t) for t in specs), default=0.0)

    return round(job_path(runs / run_id, job_key), 2)


def kernel_cpu(runs: Path, run_id: str) -> float | None:
    """CPU seconds of the warm kernels of a run and its chained runs (None: not recorded, cold kernels)."""
    total, known = 0.0, False
    for path in runs.glob(f"{run_id}*/run.json"):
        for t in json.loads(path.read_text())["tasks"]:
            if t.get("cpu_seconds") is not None:
                total, known = total + t["cpu_seconds"], True
    return round(total, 2) if known else None


def profiled_run(home: Path, label: str, extra_env: dict[str, str] | None) -> dict:
    """`lakehouse run retail_daily` with its round trips, commits, CPU and critical path."""
    rpc_log = home / f"rpc-{label}.log"
    before = delta_commits(home)
    load = os.getloadavg()[0]
    wall, peak, out, cpu, pid = timed(
        [LAKEHOUSE, "run", "retail_daily"], home, {**(extra_env or {}), "LAKEHOUSE_RPC_LOG": str(rpc_log)}
    )
    run_id = re.search(r"job retail_daily run (\S+):", out).group(1)
    after = delta_commits(home)
    commits = {t: n - before.get(t, 0) for t, n in after.items() if n != before.get(t, 0)}
    callers = [line.split() for line in rpc_log.read_text().splitlines()] if rpc_log.exists() else []
    runner_rpcs = sum(1 for p, _ in callers if p == str(pid))
    kernels = kernel_cpu(home / "runs", run_id)
    return {
        "run_id": run_id,
        "wall_s": round(wall, 2),
        "critical_path_s": critical_path(home / "runs", run_id),
        "peak_rss_mb": round(peak / 2**20),
        "round_trips": {"total": len(callers), "runner": runner_rpcs, "kernels": len(callers) - runner_rpcs,
                        **{k: sum(1 for _, x in callers if x == k) for k in ("execute", "analyze", "config")}},
        "delta_commits": {
            "total": sum(commits.values()),
            "monitoring": sum(n for t, n in commits.items() if t.split(".")[0].endswith("_monitoring")),
            "by_table": dict(sorted(commits.items(), key=lambda kv: -kv[1])),
        },
        # Warm: the runner (with Sail) alone, kernels apart. Cold: the kernels are the runner's children.
        "cpu_s": {"runner": round(cpu, 2), "kernels": kernels,
                  "total": round(cpu + (kernels or 0.0), 2)},
        "load_avg_1m": round(load, 2),
    }


def full_and_increment(scale_factor: float, days: int, extra_env: dict[str, str] | None = None) -> dict:
    home = fresh_home(f"sf{scale_factor}")
    gen = [LAKEHOUSE, "generate", "--scale-factor", str(scale_factor), "--days", str(days)]
    gen_s = timed(gen, home)[0]
    full = profiled_run(home, "full", extra_env)
    rates = layer_rates(home, full["run_id"])
    timed([LAKEHOUSE, "generate", "--scale-factor", str(scale_factor), "--days", str(days + 1)], home)
    inc = profiled_run(home, "increment", extra_env)
    # The job once more with nothing new: what an increment costs whatever its data (the job's shape).
    idle = profiled_run(home, "no_new_data", extra_env)
    return {
        "generate_s": round(gen_s, 2),
        "full_s": full["wall_s"],
        "increment_s": inc["wall_s"],
        "increment_ratio": round(inc["wall_s"] / full["wall_s"], 3),
        "no_new_data_s": idle["wall_s"],
        "no_new_data_ratio": round(idle["wall_s"] / full["wall_s"], 3),
        "peak_rss_mb": max(full["peak_rss_mb"], inc["peak_rss_mb"]),
        "rows_per_s": rates,
        "full": full,
        "increment": inc,
        "no_new_data": idle,
    }


def _median(runs: list[dict], *path: str) -> float | None:
    values = []
    for r in runs:
        for key in path:
            r = r.get(key) if isinstance(r, dict) else None
        if isinstance(r, int | float):
            values.append(r)
    return round(statistics.median(values), 2) if values else None


def summary(runs: list[dict]) -> dict:
    """Medians over passes of what the issue asks for, full load and increment side by side."""
    out: dict = {}
    for phase in ("full", "increment", "no_new_data"):
        out[phase] = {
            "wall_s": _median(runs, phase, "wall_s"),
            "critical_path_s": _median(runs, phase, "critical_path_s"),
            "round_trips": _median(runs, phase, "round_trips", "total"),
            "round_trips_runner": _median(runs, phase, "round_trips", "runner"),
            "delta_commits": _median(runs, phase, "delta_commits", "total"),
            "delta_commits_monitoring": _median(runs, phase, "delta_commits", "monitoring"),
            "cpu_runner_s": _median(runs, phase, "cpu_s", "runner"),
            "cpu_kernels_s": _median(runs, phase, "cpu_s", "kernels"),
            "cpu_total_s": _median(runs, phase, "cpu_s", "total"),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale-factor", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--large", type=float, default=10.0, help="scale factor of the growth run; 0 skips it")
    parser.add_argument("--no-baseline", action="store_true", help="skip the cold-kernel baseline run")
    args = parser.parse_args()
    load_start = os.getloadavg()
    runs = [full_and_increment(args.scale_factor, args.days) for _ in range(args.runs)]
    full_median = statistics.median(r["full_s"] for r in runs)
    inc_median = statistics.median(r["increment_s"] for r in runs)
    figures = {
        "scale_factor": args.scale_factor,
        "days": args.days,
        "full_load_median_s": full_median,
        "increment_median_s": inc_median,
        "increment_ratio": round(inc_median / full_median, 3),
        "no_new_data_median_s": statistics.median(r["no_new_data_s"] for r in runs),
        "medians": summary(runs),
        "runs": runs,
    }
    if not args.no_baseline:
        # The same run with a fresh interpreter per task, as papermill alone starts kernels.
        cold = full_and_increment(args.scale_factor, args.days, {"LAKEHOUSE_WARM_KERNELS": "0"})
        figures["cold_kernels"] = cold
        figures["warm_vs_cold_full"] = round(full_median / cold["full_s"], 3)
        figures["warm_vs_cold_increment"] = round(inc_median / cold["increment_s"], 3)
        cold_cpu = cold["increment"]["cpu_s"]["total"]
        figures["warm_vs_cold_increment_cpu"] = round(summary(runs)["increment"]["cpu_total_s"] / cold_cpu, 3)
    if args.large:
        large = full_and_increment(args.large, args.days)
        figures["large"] = {"scale_factor": args.large, **large}
        figures["growth_ratio"] = round(large["full_s"] / full_median, 2)
        figures["growth_vs_linear"] = round(large["full_s"] / (full_median * args.large / args.scale_factor), 3)
        figures["large_increment_ratio"] = large["increment_ratio"]
        figures["large_no_new_data_ratio"] = large["no_new_data_ratio"]
    figures["load_avg_start_end"] = [round(x, 2) for x in (*load_start, *os.getloadavg())]
    report("pipeline", figures)


if __name__ == "__main__":
    main()
