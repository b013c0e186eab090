"""Ops notebooks as an engineer runs them: `papermill ops_notebooks/X.ipynb out.ipynb`, fresh kernel each time.

Goal (issue 5): each ops notebook on the demo lakehouse, median <= 5 s, the engine's start included.

A small demo lakehouse is built once (sources at scale factor 0.05 x 4 days and `retail_daily`, as
the ops tests' `demo_lakehouse` fixture does). Then every notebook runs with its default parameters
(read-only or dry run, so runs do not change what the next one sees), through the papermill command
line in a new process, with env local and no engine of the benchmark's own (no SPARK_REMOTE), so
each run starts, finds or reuses the local workspace exactly as a run from a terminal does:

- `cold`: one run per notebook with nothing running (no local workspace, no kernel fork server):
  the run starts both (engine start, table registration, the imports of both included);
- `warm`: `--runs` rounds over all notebooks (interleaved, so load from other users of the machine
  spreads evenly) with the workspace and the fork server a previous run started still up: the
  notebooks' own kernel, `lakehouse-warm`, is forked with pandas, plotly, databricks-sdk and the
  library imported. The median is the figure compared with the goal;
- `plain_kernel` (the baseline, unless `--no-baseline`): right after each warm run, the same
  notebook with `-k python3`, a fresh interpreter importing everything itself, as every run did
  before the fork server; `speedup` is the ratio of the two medians.

Also measured, to show what a notebook cannot go below: papermill with an empty notebook on each
kernel, and a notebook that only imports what every ops notebook imports (pandas, plotly,
databricks-sdk) on a plain kernel. The load average is recorded with the figures: the machine may
be shared.

    python tests/benchmarks/bench_ops.py [--runs 5] [--notebooks backfill,restore] [--keep-home] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_home, report  # noqa: E402

GOAL_S = 5.0
PAPERMILL = str(ROOT / ".venv" / "bin" / "papermill")
NOTEBOOKS = sorted(p.stem for p in (ROOT / "ops_notebooks").glob("*.ipynb"))
FLOORS = {  # name: (kernel, cells)
    "empty": ("python3", ["x = 1"]),
    "empty_warm": ("lakehouse-warm", ["x = 1"]),
    "imports": ("python3", ["x = 1", "import pandas as pd\nimport plotly.express as px\nimport databricks.sdk"]),
}


def build_demo(home: Path) -> None:
    """Sources and one `retail_daily` run into `home`, in a child process (its engine ends with it)."""
    code = (
        "from retail_lakehouse.core.config import load_settings\n"
        "from retail_lakehouse.sandbox.generate import generate\n"
        "from retail_lakehouse.jobs.runner import run_job\n"
        "s = load_settings('local')\n"
        "generate(s.home, scale_factor=0.05, days=4, oltp_path=s.sqlite_path(), landing_dir=s.local_path('landing'))\n"
        "assert run_job('retail_daily', env='local').state == 'SUCCESS'\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(home), check=True, capture_output=True, text=True)


def _env(home: Path) -> dict[str, str]:
    drop = ("SPARK_REMOTE", "LAKEHOUSE_WORKSPACE_AUTOSTART", "LAKEHOUSE_FORK_KERNELS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(LAKEHOUSE_HOME=str(home), LAKEHOUSE_ENV="local")
    return env


def run_papermill(notebook: Path, out: Path, home: Path, *extra: str) -> dict[str, float]:
    """One `papermill NOTEBOOK OUT` in a new process: wall seconds and CPU seconds of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([PAPERMILL, str(notebook), str(out), "--log-level", "ERROR", *extra],
                          env=_env(home), capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"papermill {notebook.name} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def stop_workspace(home: Path) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "lakehouse"), "workspace", "stop"], env=_env(home),
                   capture_output=True, check=False)


def stop_fork_servers(home: Path) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "lakehouse"), "kernels", "stop"], env=_env(home),
                   capture_output=True, check=False)


def _fork_server_pids() -> set[int]:
    from retail_lakehouse.jobs._zygote import running_servers

    return {s["pid"] for s in running_servers()}


def _server_pid(home: Path) -> int | None:
    try:
        return json.loads((home / "workspace" / "server.json").read_text()).get("pid")
    except (OSError, ValueError):
        return None


def floor_notebooks(home: Path) -> dict[str, Path]:
    import nbformat

    paths = {}
    for name, (kernel, cells) in FLOORS.items():
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": kernel, "display_name": kernel,
                                                              "language": "python"}})
        nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
        nb.cells[0].metadata["tags"] = ["parameters"]
        paths[name] = home / f"floor_{name}.ipynb"
        nbformat.write(nb, paths[name])
    return paths


def _stats(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 2), "min": round(min(samples), 2),
            "max": round(max(samples), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    parser.add_argument("--notebooks", default=",".join(NOTEBOOKS))
    parser.add_argument("--keep-home", action="store_true", help="keep the demo lakehouse (path printed)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the plain-kernel runs (python3, no fork server) interleaved with the measured ones")
    args = parser.parse_args()
    chosen = [n.strip() for n in args.notebooks.split(",") if n.strip()]
    unknown = set(chosen) - set(NOTEBOOKS)
    if unknown:
        sys.exit(f"unknown notebooks {sorted(unknown)}; known: {', '.join(NOTEBOOKS)}")

    home = fresh_home("ops")
    out = home / "out"
    out.mkdir()
    load = [os.getloadavg()[0]]
    try:
        t = time.perf_counter()
        build_demo(home)
        build_s = time.perf_counter() - t
        cold: dict[str, dict[str, float]] = {}
        for name in chosen:  # each with nothing running: the run starts the workspace and the fork server
            stop_workspace(home)
            stop_fork_servers(home)
            cold[name] = run_papermill(ROOT / "ops_notebooks" / f"{name}.ipynb", out / f"{name}.ipynb", home)
        load.append(os.getloadavg()[0])

        floors = {name: [] for name in FLOORS}
        for name, nb in floor_notebooks(home).items():
            for _ in range(3):
                floors[name].append(run_papermill(nb, out / f"{name}.ipynb", home)["wall"])

        warm: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
        baseline: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
        servers, fork_servers = set(), set()  # restarted meanwhile (the library was edited): a warm run was cold
        for _ in range(args.runs):
            for name in chosen:
                notebook = ROOT / "ops_notebooks" / f"{name}.ipynb"
                warm[name].append(run_papermill(notebook, out / f"{name}.ipynb", home))
                servers.add(_server_pid(home))
                fork_servers |= _fork_server_pids()
                if not args.no_baseline:  # right after, under the same load
                    baseline[name].append(run_papermill(notebook, out / f"{name}.ipynb", home, "-k", "python3"))
            load.append(os.getloadavg()[0])
    finally:
        stop_workspace(home)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)

    per_notebook = {}
    for name in chosen:
        walls = [s["wall"] for s in warm[name]]
        per_notebook[name] = {
            "median_s": round(statistics.median(walls), 2),
            "meets_goal": statistics.median(walls) <= GOAL_S,
            "samples_s": [round(w, 2) for w in walls],
            "cpu_median_s": round(statistics.median(s["cpu"] for s in warm[name]), 2),
            "cold_s": round(cold[name]["wall"], 2),
        }
        if baseline[name]:
            base = statistics.median(s["wall"] for s in baseline[name])
            per_notebook[name].update(plain_kernel_median_s=round(base, 2),
                                      plain_kernel_samples_s=[round(s["wall"], 2) for s in baseline[name]],
                                      speedup=round(base / statistics.median(walls), 2))
    medians = [v["median_s"] for v in per_notebook.values()]
    report(
        "ops",
        {
            "goal_s": GOAL_S,
            "runs": args.runs,
            "all_meet_goal": all(v["meets_goal"] for v in per_notebook.values()),
            "slowest_median_s": max(medians),
            "median_of_medians_s": round(statistics.median(medians), 2),
            "notebooks": per_notebook,
            "floor_empty_notebook_s": _stats(floors["empty"]),
            "floor_empty_notebook_warm_kernel_s": _stats(floors["empty_warm"]),
            "floor_imports_notebook_s": _stats(floors["imports"]),
            "workspace_servers_during_warm_runs": len(servers - {None}),
            "fork_servers_during_warm_runs": len(fork_servers),
            "demo_build_s": round(build_s, 1),
            "load_average_1m": [round(x, 2) for x in load],
            "home": str(home) if args.keep_home else None,
        },
    )
    print(json.dumps({n: (v["median_s"], v.get("plain_kernel_median_s"), v["cold_s"]) for n, v in per_notebook.items()}))


if __name__ == "__main__":
    main()
