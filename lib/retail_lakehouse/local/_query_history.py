"""The query history of the local workspace, kept under LAKEHOUSE_HOME so it outlives the process.

On Databricks the warehouse's query history is the workspace's, whichever client ran the query. Locally
a workspace may live in a notebook's kernel, in a test or in `lakehouse workspace start`; each finished
statement is therefore appended to `LAKEHOUSE_HOME/workspace/query_history.jsonl` (the SDK's
`QueryInfo` as JSON, one per line), and `GET /api/2.0/sql/history/queries` answers from that file
together with the statements of its own process. So `diagnose_slow_query -p query_id ...` run in a new
process finds a query another process served.

The file keeps the newest `MAX_ENTRIES` queries (compacted when it grows past twice that); writers
append under an exclusive `flock`, so concurrent workspaces on one home do not interleave lines.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_ENTRIES = 5000
MAX_TEXT = 20_000  # characters of query text kept (a statement may inline large literals)

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def history_file() -> Path:
    from retail_lakehouse.core.config import lakehouse_home

    return lakehouse_home() / "workspace" / "query_history.jsonl"


def record(info: dict[str, Any], path: Path | None = None) -> None:
    """Append one finished query (a `QueryInfo.as_dict()`); never raises (the statement already ran)."""
    path = path or history_file()
    entry = dict(info)
    if isinstance(entry.get("query_text"), str) and len(entry["query_text"]) > MAX_TEXT:
        entry["query_text"] = entry["query_text"][:MAX_TEXT]
    line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
    try:
        import fcntl
    except ImportError:  # not POSIX: appends of one short line are atomic enough
        fcntl = None  # type: ignore[assignment]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock:
            for _ in range(5):
                with open(path, "a+", encoding="utf-8") as f:
                    if fcntl is not None:
                        fcntl.flock(f, fcntl.LOCK_EX)
                        if os.fstat(f.fileno()).st_ino != _inode(path):
                            continue  # another process compacted the file meanwhile: append to the new one
                    f.write(line)
                    f.flush()
                    if f.tell() > 2 * MAX_ENTRIES * 600:  # about 2 x MAX_ENTRIES typical lines: compact
                        _compact(f, path)
                    return
    except OSError as exc:
        log.warning("query history: could not record %s in %s: %s", info.get("query_id"), path, exc)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _compact(f: Any, path: Path) -> None:
    """Keep the newest MAX_ENTRIES lines (called with the file's lock held)."""
    f.seek(0)
    lines = f.readlines()
    if len(lines) <= MAX_ENTRIES:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(lines[-MAX_ENTRIES:]), encoding="utf-8")
    tmp.replace(path)  # readers see the old file or the new one, never half of one


def load(path: Path | None = None) -> list[dict[str, Any]]:
    """Every recorded query, oldest first (a torn or foreign line is skipped)."""
    path = path or history_file()
    try:
        stat = path.stat()
    except OSError:
        return []
    key = (stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _cache.get(str(path))
        if cached and cached[0] == key:
            return cached[1]
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("query_id"):
            entries.append(entry)
    with _lock:
        _cache[str(path)] = (key, entries)
    return entries
