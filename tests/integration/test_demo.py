"""`lakehouse demo` as a user runs it, twice on one home: the second build starts from empty tables."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

DEMO = ["demo", "--scale-factor", "0.05", "--days", "5", "--increments", "1"]


def _lakehouse(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "LAKEHOUSE_ENV": "local"}
    env.pop("SPARK_REMOTE", None)  # the command starts its own engine, as from a terminal
    cli = Path(sys.executable).with_name("lakehouse")
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=600, check=False)


def _pos_rows_per_day(home: Path) -> Counter[str]:
    from deltalake import DeltaTable

    path = home / "warehouse" / "retail_datalake" / "local_silver" / "pos_transactions"
    days = DeltaTable(str(path)).to_pyarrow_table(columns=["event_date"]).column("event_date").to_pylist()
    return Counter(str(d) for d in days)


def test_a_second_demo_after_a_drill_rebuilds_the_tables(tmp_path):
    first = _lakehouse(tmp_path, *DEMO)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    built = _pos_rows_per_day(tmp_path)
    drill = _lakehouse(tmp_path, "drill", "volume_drop")  # deletes 19 of 20 rows of the newest POS day
    assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-3000:]
    newest = max(built)
    assert _pos_rows_per_day(tmp_path)[newest] < built[newest]

    second = _lakehouse(tmp_path, *DEMO)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[demo] starting from empty tables: removed the earlier warehouse" in second.stdout
    assert _pos_rows_per_day(tmp_path) == built
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").iterdir())) > 0  # runs kept
