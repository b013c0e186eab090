"""Monitoring rows of a local job run, kept on disk by its tasks and written once per table per job run.

Each task of a daily increment wrote its own monitoring rows: a watermark MERGE (about 80 ms of
engine CPU even for one row), a reconciliation append, quality metrics, stream progress; twelve
watermark commits alone per increment. Under the local job runner a task's kernel gets
`LAKEHOUSE_MONITORING_JOURNAL` (a folder per top-level run): `write_monitoring` then stores the rows
there, one file per call written atomically after the task's data commit, and the runner writes them
at the end of each job run (chained runs included) with `flush`: one commit per table.

Correctness: a journal entry is written only after the data it describes is committed, so writing
any subset of entries at any time is what the task itself would have written, a little later.
Between jobs of one run everything is written (a quality job reads the reconciliation rows of the
transformation job before it). A killed runner leaves its entries on disk; the next run on the same
home replays the entries of runs whose runner is gone (`replay_orphans`), so a rerun converges to the
uninterrupted result. Replays are idempotent: appended rows are inserted only where their keys are
not in the table yet, and a merged row (a watermark) only updates a row older than itself.

Outside the runner (Databricks jobs, papermill alone, tests calling the library) there is no journal:
`write_monitoring` writes at once, as before.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from retail_lakehouse.core.config import Settings

__all__ = [
    "JOURNAL_ENV",
    "FlushResult",
    "close_journal",
    "flush",
    "journal_root",
    "open_journal",
    "replay_orphans",
    "write_monitoring",
]

log = logging.getLogger(__name__)

JOURNAL_ENV = "LAKEHOUSE_MONITORING_JOURNAL"
_OWNER = "owner.json"
_ENTRY = ".entry.json"
_CLAIMED = ".claimed"


@dataclass
class FlushResult:
    """What a flush wrote.

    Attributes:
        commits: table -> rows written (one commit each).
        problems: tables that could not be written (their entries stay for the next run's replay).
    """

    commits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- writing (tasks)


def write_monitoring(
    table: str,
    rows: Sequence[Sequence[Any]],
    schema: str,
    *,
    merge: bool = False,
    evolve_schema: bool = False,
    env: str | None = None,
) -> bool:
    """Write monitoring rows: to the run's journal when a local job runner gave this process one,
    else to the table now (append, or MERGE on the table's keys with `merge`).

    Args:
        table: registry name, e.g. ``monitoring.watermarks``.
        rows: values in `schema`'s column order (datetimes, dates, decimals, text, numbers, None).
        schema: the rows' DDL, e.g. the TableDef's ``ddl()``.
        merge: MERGE on the table's keys (a newer row wins) instead of appending.
        evolve_schema: add columns the table lacks.
        env: environment.

    Returns:
        True when the rows went to the journal (written at the end of the job run).
    """
    settings = load_settings(env)
    folder = os.environ.get(JOURNAL_ENV)
    if not rows:
        return False
    if folder and settings.is_local and Path(folder).is_dir():
        entry = {"table": table, "schema": schema, "merge": merge, "evolve": evolve_schema, "env": settings.env,
                 "rows": [[_encode(v) for v in r] for r in rows]}
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}"
        tmp = Path(folder) / f".{name}.tmp"
        with tmp.open("w") as handle:
            json.dump(entry, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(Path(folder) / f"{name}{_ENTRY}")
        return True
    _write(table, [list(r) for r in rows], schema, merge=merge, evolve_schema=evolve_schema, replay=False,
           settings=settings)
    return False


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$ts": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$ts" in value:
            return dt.datetime.fromisoformat(value["$ts"])
        if "$date" in value:
            return dt.date.fromisoformat(value["$date"])
        if "$dec" in value:
            return decimal.Decimal(value["$dec"])
    return value


# ----------------------------------------------------------------------------- flushing (the runner)


def journal_root(settings: Settings | None = None) -> Path:
    """The folder holding one journal folder per top-level local run."""
    settings = settings or load_settings("local")
    return settings.home / "monitoring_journal"


def open_journal(run_id: str, settings: Settings | None = None) -> Path:
    """Create the journal folder of a top-level run, owned by this process; return it."""
    folder = journal_root(settings) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _OWNER).write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
    return folder


def flush(folder: Path, *, replay: bool = False) -> FlushResult:
    """Write the journal's entries, one commit per table; remove those written.

    Entries are claimed first (renamed), so two flushers never write one entry twice. A table that
    fails keeps its entries (renamed back) for a later flush or the next run's replay.

    Args:
        folder: a journal folder (`open_journal`).
        replay: entries of a killed run: insert appended rows only where their keys are missing.
    """
    result = FlushResult()
    claimed: list[Path] = []
    for path in sorted(folder.glob(f"*{_ENTRY}")) + (sorted(folder.glob(f"*{_CLAIMED}")) if replay else []):
        target = path if path.name.endswith(_CLAIMED) else path.with_name(path.name + _CLAIMED)
        try:
            if target != path:
                path.rename(target)
            claimed.append(target)
        except FileNotFoundError:  # another flusher took it
            continue
    groups: dict[tuple[str, str, bool, str], dict[str, Any]] = {}
    for path in claimed:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # a torn file cannot exist (atomic rename): say so, keep it
            result.problems.append(f"unreadable journal entry {path.name}: {exc}")
            continue
        group = groups.setdefault((entry["table"], entry["schema"], entry["merge"], entry["env"]),
                                  {"rows": [], "evolve": False, "paths": []})
        group["rows"].extend([_decode(v) for v in r] for r in entry["rows"])
        group["evolve"] = group["evolve"] or entry["evolve"]
        group["paths"].append(path)
    for (table, schema, merge, env), group in groups.items():
        try:
            _write(table, group["rows"], schema, merge=merge, evolve_schema=group["evolve"], replay=replay,
                   settings=load_settings(env))
        except Exception as exc:  # noqa: BLE001 - kept for the next run; the job's own outcome stands
            result.problems.append(f"monitoring rows of {table} not written yet ({type(exc).__name__}: "
                                   f"{str(exc)[:300]}); the next run on this home writes them")
            for path in group["paths"]:
                path.rename(path.with_name(path.name.removesuffix(_CLAIMED)))
            continue
        for path in group["paths"]:
            path.unlink(missing_ok=True)
        result.commits[table] = result.commits.get(table, 0) + len(group["rows"])
    return result


def close_journal(folder: Path) -> FlushResult:
    """Flush what is left and remove the folder when nothing is (the run's last step)."""
    result = flush(folder)
    if not any(folder.glob(f"*{_ENTRY}")) and not any(folder.glob(f"*{_CLAIMED}")):
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()
    return result


def replay_orphans(settings: Settings | None = None) -> FlushResult:
    """Write the entries that runs killed before their end left (their runner process is gone)."""
    settings = settings or load_settings("local")
    total = FlushResult()
    root = journal_root(settings)
    if not root.is_dir():
        return total
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if _alive(folder):
            continue
        log.warning("replaying the monitoring rows a killed run left in %s", folder)
        result = flush(folder, replay=True)
        for table, n in result.commits.items():
            total.commits[table] = total.commits.get(table, 0) + n
        total.problems.extend(result.problems)
        if not result.problems:
            for path in folder.iterdir():
                path.unlink(missing_ok=True)
            folder.rmdir()
    return total


def _alive(folder: Path) -> bool:
    """Whether the runner that owns a journal folder still runs (same pid and start time)."""
    try:
        owner = json.loads((folder / _OWNER).read_text())
    except (OSError, ValueError):
        return False
    started = owner.get("start")
    return started is not None and _start_time(int(owner.get("pid", 0))) == started


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _write(
    table: str, rows: list[list[Any]], schema: str, *, merge: bool, evolve_schema: bool, replay: bool,
    settings: Settings,
) -> None:
    """One commit: MERGE on the keys (the newest row per key; a stored newer row wins) or append
    (on replay: insert the rows whose keys are missing)."""
    from retail_lakehouse import engine
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.engine import writes

    tdef = registry().get(table)
    spark = engine.get_spark(settings.env, lazy_tables=True)  # the runner's session names a few tables
    keys = list(tdef.keys)
    if merge or replay:
        columns = [c.strip().split()[0].strip("`") for c in _split_ddl(schema)]
        index = [columns.index(k) for k in keys]
        latest: dict[tuple[Any, ...], list[Any]] = {}
        for r in rows:  # journal order: a later row of a key replaces an earlier one
            latest[tuple(r[i] for i in index)] = r
        df = spark.createDataFrame(list(latest.values()), schema)
        newer = "s.updated_at >= t.updated_at" if merge and "updated_at" in columns else None
        writes.merge_into(df, table, keys=keys, assume_unique=True, evolve_schema=evolve_schema,
                          update_condition=newer if merge else "false", env=settings.env)
    else:
        writes.write_table(spark.createDataFrame(rows, schema), table, mode="append", evolve_schema=evolve_schema,
                           env=settings.env)


def _split_ddl(ddl: str) -> list[str]:
    """Top-level column definitions of a DDL string (commas inside <...> or (...) kept)."""
    parts, depth, current = [], 0, ""
    for ch in ddl:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts
