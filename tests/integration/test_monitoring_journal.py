"""engine.journal against the real engine: monitoring rows kept by tasks, one commit per table per flush.

The runner's use of it (a job run's rows written at its end; a killed run's rows replayed by the next
run, which converges to the uninterrupted result) is in tests/integration/test_pipeline_jobs.py and
test_runner.py; here the journal itself: what is kept, what one flush commits, replays.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pytest

from retail_lakehouse import engine
from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.tables import registry
from retail_lakehouse.engine import journal, watermarks


@pytest.fixture(scope="module")
def home(isolated_home):
    return isolated_home


@pytest.fixture
def active(home, monkeypatch, request):
    """A journal folder of this process (as the runner opens one) handed to this process's writes."""
    folder = journal.open_journal(f"run-{request.node.name[:40]}", load_settings("local"))
    monkeypatch.setenv(journal.JOURNAL_ENV, str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def version(table: str) -> int | None:
    from deltalake import DeltaTable

    path = engine.table_dir(registry().get(table).full_name(load_settings("local")), load_settings("local"))
    return DeltaTable(str(path)).version() if (path / "_delta_log").is_dir() else None


def rows(table: str, where: str = "true") -> list[dict]:
    full = registry().get(table).full_name(load_settings("local"))
    return [r.asDict() for r in engine.sql(f"SELECT * FROM {full} WHERE {where}").collect()]


def reconciliation_row(run_id: str, table: str, bronze: int) -> tuple:
    return (run_id, table, dt.datetime.now(dt.UTC), bronze, bronze - 1, 1, 0, True)


RECONCILIATION = "monitoring.reconciliation"


def test_without_a_journal_rows_are_written_at_once(home, monkeypatch):  # noqa: ARG001
    monkeypatch.delenv(journal.JOURNAL_ENV, raising=False)
    watermarks.set_watermark("silver", "direct", "2024-01-05 10:00:00", "run-direct", env="local")
    assert watermarks.get_watermark("silver", "direct", env="local") == "2024-01-05 10:00:00"
    tdef = registry().get(RECONCILIATION)
    kept = journal.write_monitoring(RECONCILIATION, [reconciliation_row("run-direct", "t", 5)], tdef.ddl(), env="local")
    assert kept is False
    assert len(rows(RECONCILIATION, "run_id = 'run-direct'")) == 1


def test_journaled_rows_wait_for_the_flush_which_commits_once_per_table(active):
    tdef = registry().get(RECONCILIATION)
    wm_before, rec_before = version("monitoring.watermarks"), version(RECONCILIATION)
    for i, source in enumerate(["a", "b", "c"]):  # three tasks, three calls
        watermarks.set_watermark("silver", f"journal.{source}", f"2024-01-0{i + 1} 00:00:00", "run-j", env="local")
    for table in ("orders", "customers"):
        assert journal.write_monitoring(
            RECONCILIATION, [reconciliation_row("run-j", table, 10)], tdef.ddl(), env="local"
        )
    assert len(list(active.glob("*.entry.json"))) == 5
    # Nothing written yet: the tables are as they were.
    assert (version("monitoring.watermarks"), version(RECONCILIATION)) == (wm_before, rec_before)
    assert watermarks.get_watermark("silver", "journal.a", env="local") is None

    result = journal.flush(active)

    assert result.problems == []
    assert result.commits == {"monitoring.watermarks": 3, RECONCILIATION: 2}
    assert version("monitoring.watermarks") == wm_before + 1  # one commit each
    assert version(RECONCILIATION) == rec_before + 1
    assert watermarks.get_watermarks("silver", ["journal.a", "journal.b", "journal.c"], env="local") == {
        "journal.a": "2024-01-01 00:00:00",
        "journal.b": "2024-01-02 00:00:00",
        "journal.c": "2024-01-03 00:00:00",
    }
    assert sorted(r["table_name"] for r in rows(RECONCILIATION, "run_id = 'run-j'")) == ["customers", "orders"]
    assert list(active.glob("*.json")) == [active / "owner.json"]  # written entries are gone
    assert journal.flush(active).commits == {}  # and a second flush writes nothing


def test_the_latest_row_of_a_key_wins_and_an_older_one_never_overwrites(active):
    watermarks.set_watermark("gold", "wins", "2024-01-01 00:00:00", "run-1", env="local")
    watermarks.set_watermark("gold", "wins", "2024-01-02 00:00:00", "run-2", env="local")
    journal.flush(active)
    (row,) = rows("monitoring.watermarks", "pipeline = 'gold' AND source = 'wins'")
    assert (row["last_processed_timestamp"], row["run_id"]) == ("2024-01-02 00:00:00", "run-2")
    # A journaled row older than the stored one (a replay after a later backfill set it): not applied.
    old = ("gold", "wins", "2023-12-31 00:00:00", None, "run-old", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    journal.write_monitoring("monitoring.watermarks", [old], watermarks._SCHEMA, merge=True, env="local")
    journal.flush(active)
    (row,) = rows("monitoring.watermarks", "pipeline = 'gold' AND source = 'wins'")
    assert row["run_id"] == "run-2"


def test_the_entries_of_a_killed_run_are_replayed_once(home, active):
    """A runner killed after its flush committed but before it removed the entries: the next run's
    replay inserts nothing twice; a runner killed before flushing: the replay writes its rows."""
    tdef = registry().get(RECONCILIATION)
    for table in ("orders", "stores"):
        journal.write_monitoring(RECONCILIATION, [reconciliation_row("run-killed", table, 7)], tdef.ddl(), env="local")
    watermarks.set_watermark("silver", "killed.orders", "2024-01-09 00:00:00", "run-killed", env="local")
    copies = {p.name: p.read_bytes() for p in active.glob("*.entry.json")}
    assert journal.flush(active).commits == {RECONCILIATION: 2, "monitoring.watermarks": 1}
    for name, data in copies.items():  # "killed" before the entries were removed
        (active / name).write_bytes(data)
    # The owner is gone: a pid that is not running.
    (active / "owner.json").write_text(json.dumps({"pid": 2**22 + 17, "start": 1}))
    watermarks.set_watermark("silver", "killed.stores", "2024-01-08 00:00:00", "run-killed", env="local")

    result = journal.replay_orphans(load_settings("local"))

    assert result.problems == []
    assert result.commits == {RECONCILIATION: 2, "monitoring.watermarks": 2}
    assert sorted(r["table_name"] for r in rows(RECONCILIATION, "run_id = 'run-killed'")) == ["orders", "stores"]
    assert watermarks.get_watermarks("silver", ["killed.orders", "killed.stores"], env="local") == {
        "killed.orders": "2024-01-09 00:00:00",
        "killed.stores": "2024-01-08 00:00:00",
    }
    assert not active.exists()  # replayed and removed


def test_a_running_runs_journal_is_not_replayed(active):
    watermarks.set_watermark("silver", "alive", "2024-01-01 00:00:00", "run-alive", env="local")
    assert journal.replay_orphans(load_settings("local")).commits == {}
    assert len(list(active.glob("*.entry.json"))) == 1  # this process owns it: left to its own flush
    assert watermarks.get_watermark("silver", "alive", env="local") is None


def test_a_table_that_cannot_be_written_keeps_its_entries(active):
    journal.write_monitoring("monitoring.no_such_table", [("x",)], "a string", env="local")
    watermarks.set_watermark("silver", "kept.next", "2024-01-01 00:00:00", "run-k", env="local")

    result = journal.flush(active)

    assert result.commits == {"monitoring.watermarks": 1}  # the other table is written
    (problem,) = result.problems
    assert "monitoring.no_such_table" in problem and "the next run on this home writes them" in problem
    (kept,) = active.glob("*.entry.json")  # back under its name, for the next flush or replay
    assert json.loads(kept.read_text())["table"] == "monitoring.no_such_table"
    kept.unlink()


def test_an_entry_is_written_whole_or_not_at_all(active):
    """Entries appear by rename: a reader never sees a half-written one (no *.tmp is ever flushed)."""
    (active / ".partial.tmp").write_text('{"table": ')
    watermarks.set_watermark("silver", "whole", "2024-01-01 00:00:00", "run-w", env="local")
    result = journal.flush(active)
    assert result.problems == [] and result.commits == {"monitoring.watermarks": 1}
    assert os.path.exists(active / ".partial.tmp")
