"""Delta facts about a table, read through the workspace (the same SQL locally and on Databricks).

Table names passed here come from the registry (`TableDef.full_name`), never from user text, so they
are safe to place in SQL; values go in as bound parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import LakehouseError, SqlError, TableNotFoundError
from retail_lakehouse.core.tables import TableDef, registry

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient


@dataclass(frozen=True)
class TableRef:
    """A registered table in one environment."""

    tdef: TableDef
    full: str
    env: str

    @classmethod
    def of(cls, tdef: TableDef, env: str) -> TableRef:
        return cls(tdef, tdef.full_name(load_settings(env)), env)


def sql(w: WorkspaceClient, statement: str, params: dict[str, Any] | None = None, *, env: str) -> pd.DataFrame:
    """`statements.run_sql` with the environment's warehouse."""
    from retail_lakehouse.databricks.statements import run_sql

    return run_sql(w, statement, params, env=env)


def sql_each(
    w: WorkspaceClient, statements: list[str], *, env: str, workers: int = 4
) -> list[pd.DataFrame | Exception]:
    """Run independent statements concurrently; each one's result, or the error it raised, in order.

    A warehouse serves statements in parallel, and each one's round trip is mostly waiting: a review
    of thirty tables takes a fraction of the time one statement after the other would.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(statement: str) -> pd.DataFrame | Exception:
        try:
            return sql(w, statement, env=env)
        except LakehouseError as exc:
            return exc

    if len(statements) < 2:
        return [one(s) for s in statements]
    with ThreadPoolExecutor(max_workers=min(workers, len(statements)), thread_name_prefix="ops-sql") as pool:
        return list(pool.map(one, statements))


def exists(w: WorkspaceClient, ref: TableRef) -> bool:
    """True when the table exists as a Delta table."""
    try:
        sql(w, f"DESCRIBE DETAIL {ref.full}", env=ref.env)
    except (SqlError, TableNotFoundError):
        return False
    return True


def history(w: WorkspaceClient, ref: TableRef, limit: int | None = None) -> pd.DataFrame:
    """`DESCRIBE HISTORY`, newest first."""
    suffix = f" LIMIT {int(limit)}" if limit else ""
    return sql(w, f"DESCRIBE HISTORY {ref.full}{suffix}", env=ref.env)


def version(w: WorkspaceClient, ref: TableRef) -> int:
    """The table's current Delta version."""
    return int(history(w, ref, limit=1)["version"].iloc[0])


def detail(w: WorkspaceClient, ref: TableRef) -> dict[str, Any]:
    """`DESCRIBE DETAIL` as a dict (numFiles, sizeInBytes, partitionColumns, lastModified, ...)."""
    return dict(sql(w, f"DESCRIBE DETAIL {ref.full}", env=ref.env).iloc[0])


def count(w: WorkspaceClient, ref: TableRef, *, where: str | None = None, at_version: int | None = None) -> int:
    """Rows of the table (optionally at a version, optionally filtered by a trusted predicate)."""
    travel = f" VERSION AS OF {int(at_version)}" if at_version is not None else ""
    pred = f" WHERE {where}" if where else ""
    frame = sql(w, f"SELECT count(*) AS n FROM {ref.full}{travel}{pred}", env=ref.env)
    return int(frame["n"].iloc[0])


def columns(w: WorkspaceClient, ref: TableRef) -> list[str]:
    """The table's column names now (from an empty result's manifest)."""
    return list(sql(w, f"SELECT * FROM {ref.full} LIMIT 0", env=ref.env).columns)


@cache
def lineage() -> dict[str, list[str]]:
    """Table ref -> refs built directly from it, as the pipeline declares it: each silver rule set's
    `source` (bronze -> silver and its quarantine) and what each gold build reads (`gold.SOURCES`).

    Foreign-key and lookup references are not lineage: they validate rows, and restoring a table
    they name does not rebuild the tables that reference it.
    """
    from retail_lakehouse.pipeline import gold, silver

    graph: dict[str, list[str]] = {}
    for name in silver.SILVER_TABLES:
        rules = silver.rule_set(name)
        graph.setdefault(rules.source, []).extend([f"silver.{name}", f"silver.{name}_quarantine"])
        graph.setdefault(f"silver.{name}", [])
    for target, sources in gold.SOURCES.items():
        graph.setdefault(target, [])
        for source in sources:
            graph.setdefault(source, []).append(target)
    return graph


def downstream(ref: str) -> list[str]:
    """Every table built from `ref`, directly or not, in build order (breadth first)."""
    graph, seen, queue, out = lineage(), {ref}, list(lineage().get(ref, [])), []
    while queue:
        nxt = queue.pop(0)
        if nxt in seen:
            continue
        seen.add(nxt)
        out.append(nxt)
        queue.extend(graph.get(nxt, []))
    return out


def date_key(day: dt.date) -> int:
    """yyyymmdd integer of a date (gold partition key)."""
    return int(day.strftime("%Y%m%d"))


def registered(ref: str) -> TableDef:
    """The registry entry of a `layer.name` ref."""
    return registry().get(ref)
