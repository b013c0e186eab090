"""Shared helpers for the benchmark scripts (not collected by pytest)."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {cpu}, Python {platform.python_version()}"


def median_of(fn: Callable[[], float | None], runs: int) -> tuple[float, list[float]]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        value = fn()
        samples.append(value if value is not None else time.perf_counter() - started)
    return statistics.median(samples), samples


def fresh_home(prefix: str) -> Path:
    """A new lakehouse home under TMPDIR, removed when the script ends (a scale factor 10 home holds
    about 0.5 GB; repeated `make bench` runs filled TMPDIR). `LAKEHOUSE_BENCH_KEEP=1` keeps it to look
    at, and the script says where it is."""
    home = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    if os.environ.get("LAKEHOUSE_BENCH_KEEP", "") in ("1", "true", "yes"):
        print(f"kept: {home}", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def report(name: str, figures: dict) -> None:
    out = {"benchmark": name, "machine": machine(), **figures}
    print(json.dumps(out, indent=2, default=str))
    results = ROOT / "tests" / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(out, indent=2, default=str))


def python() -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True)
