"""OPTIMIZE (compaction, Z-order) and VACUUM of a table, measured before and after.

Before and after the OPTIMIZE: the file count and size histogram of the table (`_metadata` of each
row's file), and a representative query's time and files read. VACUUM keeps the runbook's 168-hour
retention: a shorter one is refused as a bad parameter before anything runs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from retail_lakehouse.core.errors import ParameterError, SqlError
from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.ops import _delta
from retail_lakehouse.ops._delta import TableRef
from retail_lakehouse.ops._outcome import Outcome
from retail_lakehouse.ops.safety import require_confirmation

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.core.tables import TableDef
    from retail_lakehouse.ops.audit import AuditRecord
    from retail_lakehouse.ops.summary import Summary

MIN_RETENTION_HOURS = 168
SMALL_FILE_BYTES = 32 * 1024 * 1024  # files under 32 MB count as small (target size is 128 MB-1 GB)
_PRED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=|>=|<=|>|<)\s*('[0-9A-Za-z_\- :.]*'|-?\d+)\s*$")


@dataclass
class FileStats:
    """The table's data files at one moment."""

    version: int
    num_files: int
    size_bytes: int
    sizes: list[int] = field(default_factory=list)

    @property
    def small_files(self) -> int:
        return sum(1 for s in self.sizes if s < SMALL_FILE_BYTES)


@dataclass
class QueryProbe:
    """One timed run of the representative query."""

    statement: str
    seconds: float
    files_read: int
    rows: int


@dataclass
class OptimizeOutcome(Outcome):
    """What the run did and whether it held (`raise_for_status()` raises when it did not)."""

    procedure: ClassVar[str] = "optimize"
    dry_run: bool
    statements: list[str]
    before: FileStats
    after: FileStats
    probe_before: QueryProbe
    probe_after: QueryProbe
    metrics: dict[str, Any] = field(default_factory=dict)
    vacuum_files: list[str] = field(default_factory=list)
    held: bool = True
    message: str = ""

    def comparison(self) -> pd.DataFrame:
        """Before/after figures, for display."""
        return pd.DataFrame(
            {
                "measure": ["files", "small files", "size (bytes)", "query seconds", "files read"],
                "before": [self.before.num_files, self.before.small_files, self.before.size_bytes,
                           self.probe_before.seconds, self.probe_before.files_read],
                "after": [self.after.num_files, self.after.small_files, self.after.size_bytes,
                          self.probe_after.seconds, self.probe_after.files_read],
            }
        )


def parse_where(where: str, partition_columns: list[str]) -> list[str]:
    """Validate an OPTIMIZE WHERE clause: `AND`-ed comparisons of partition columns with literals.

    Raises:
        ParameterError: anything else (other columns, functions, OR, a second statement).
    """
    if not where.strip():
        return []
    preds = []
    for part in re.split(r"\s+AND\s+", where.strip(), flags=re.IGNORECASE):
        m = _PRED.match(part)
        if not m:
            raise ParameterError(
                "where", f"{part!r} is not `column op literal` (op one of = >= <= > <), e.g. date_key >= 20240101"
            )
        if m.group(1) not in partition_columns:
            raise ParameterError(
                "where", f"{m.group(1)!r} is not a partition column; OPTIMIZE WHERE takes "
                f"{', '.join(partition_columns) or 'nothing: the table is not partitioned'}"
            )
        preds.append(f"{m.group(1)} {m.group(2)} {m.group(3)}")
    return preds


def check_zorder(zorder: list[str], tdef: TableDef) -> list[str]:
    """Z-order columns must be table columns and not partition columns.

    Raises:
        ParameterError: names the bad column and the allowed ones.
    """
    for col in zorder:
        if col not in tdef.columns:
            raise ParameterError("zorder_by", f"{col!r} is not a column of {tdef.ref}; columns: {', '.join(tdef.columns)}")
        if col in tdef.partition_by:
            raise ParameterError("zorder_by", f"{col!r} is a partition column; Z-order by other columns")
    return zorder


def check_retention(hours: int) -> int:
    """The runbook's VACUUM guard.

    Raises:
        ParameterError: retention under 168 hours.
    """
    if hours < MIN_RETENTION_HOURS:
        raise ParameterError(
            "retention_hours", f"{hours} h is under the runbook's {MIN_RETENTION_HOURS} h (7 days): time travel "
            "and running readers would break. Use 168 or more."
        )
    return hours


def _check_layout(values: dict[str, Any]) -> dict[str, Any]:
    """The WHERE clause as predicates on partition columns, and Z-order columns, of the chosen table."""
    tdef = values["table"]
    return {"where": parse_where(values["where"], list(tdef.partition_by)),
            "zorder_by": check_zorder(values["zorder_by"], tdef)}


# The notebook's parameters beyond their annotations (see core.params): `where` becomes its
# predicates (recorded AND-ed), `zorder_by` checked columns, `retention_hours` at least 168.
PARAMETERS = Parameters(
    table="table",
    where=Param(required=False, record=" AND ".join),
    zorder_by="list",
    retention_hours=Param("int", check=check_retention),
    check=_check_layout,
)


def statements(ref: TableRef, preds: list[str], zorder: list[str], vacuum: bool, retention_hours: int) -> list[str]:
    """The SQL the run issues, in order."""
    sql = f"OPTIMIZE {ref.full}"
    if preds:
        sql += " WHERE " + " AND ".join(preds)
    if zorder:
        sql += f" ZORDER BY ({', '.join(zorder)})"
    out = [sql]
    if vacuum:
        out.append(f"VACUUM {ref.full} RETAIN {retention_hours} HOURS")
    return out


def file_stats(w: WorkspaceClient, ref: TableRef) -> FileStats:
    """Files of the current version with their sizes.

    Per-file sizes come from each row's `_metadata` (Databricks); an engine without it (the local
    one) gives totals only and `sizes` holds the average size once per file.
    """
    info = _delta.detail(w, ref)
    num, size = int(info.get("numFiles") or 0), int(info.get("sizeInBytes") or 0)
    try:
        frame = _delta.sql(
            w,
            f"SELECT _metadata.file_path AS path, max(_metadata.file_size) AS size FROM {ref.full} "
            "GROUP BY _metadata.file_path",
            env=ref.env,
        )
        sizes = [int(s) for s in frame["size"]]
    except SqlError:
        sizes = [size // num] * num if num else []
    return FileStats(_delta.version(w, ref), num, size, sizes)


def probe_query(tdef: TableDef, ref: TableRef, preds: list[str], zorder: list[str]) -> str:
    """A representative query: an aggregate filtered as the table is read (partition and Z-order columns)."""
    filters = list(preds)
    return f"SELECT count(*) AS n FROM {ref.full}" + (" WHERE " + " AND ".join(filters) if filters else "")


def run_probe(w: WorkspaceClient, ref: TableRef, statement: str) -> QueryProbe:
    """Time the query and count the files it reads (`_metadata`; else the table's files, an upper bound)."""
    started = time.perf_counter()
    rows = int(_delta.sql(w, statement, env=ref.env)["n"].iloc[0])
    seconds = round(time.perf_counter() - started, 3)
    files_sql = statement.replace("SELECT count(*) AS n", "SELECT count(DISTINCT _metadata.file_path) AS n", 1)
    try:
        files = int(_delta.sql(w, files_sql, env=ref.env)["n"].iloc[0])
    except SqlError:
        files = int(_delta.detail(w, ref).get("numFiles") or 0)
    return QueryProbe(statement, seconds, files, rows)


def histogram(before: FileStats, after: FileStats) -> pd.DataFrame:
    """File sizes (KB) of both moments in long form, for a histogram."""
    rows = [("before", s / 1024) for s in before.sizes] + [("after", s / 1024) for s in after.sizes]
    return pd.DataFrame(rows, columns=["when", "size_kb"])


def run(
    w: WorkspaceClient,
    tdef: TableDef,
    *,
    env: str,
    preds: list[str],
    zorder: list[str],
    vacuum: bool,
    retention_hours: int,
    dry_run: bool,
    confirm: bool,
    record: AuditRecord | None = None,
) -> OptimizeOutcome:
    """Measure, OPTIMIZE (and VACUUM) unless dry run, measure again, verify.

    Raises:
        ConfirmationRequired: qa/prod without confirm (nothing changed).
        ParameterError: retention under 168 hours.
    """
    check_retention(retention_hours)
    require_confirmation(env, dry_run=dry_run, confirm=confirm, action=f"OPTIMIZE/VACUUM of {tdef.ref}")
    ref = TableRef.of(tdef, env)
    sqls = statements(ref, preds, zorder, vacuum, retention_hours)
    query = probe_query(tdef, ref, preds, zorder)
    before = file_stats(w, ref)
    rows_before = _delta.count(w, ref)
    probe_before = run_probe(w, ref, query)
    vacuum_files: list[str] = []
    if vacuum:
        dry = _delta.sql(w, f"VACUUM {ref.full} RETAIN {retention_hours} HOURS DRY RUN", env=env)
        vacuum_files = [str(p) for p in dry.get("path", [])]
    if dry_run:
        return OptimizeOutcome(True, sqls, before, before, probe_before, probe_before, vacuum_files=vacuum_files,
                               message="dry run: would run " + "; ".join(f"`{s}`" for s in sqls) + "; nothing changed")
    result = _delta.sql(w, sqls[0], env=env)
    metrics = dict(result["metrics"].iloc[0]) if "metrics" in result and not result.empty else {}
    if vacuum:
        _delta.sql(w, sqls[1], env=env)
    after = file_stats(w, ref)
    if record is not None and after.version != before.version:
        record.changed(ref.full, before.version, after.version)
    probe_after = run_probe(w, ref, query)
    rows_after = _delta.count(w, ref)
    held = rows_after == rows_before and after.num_files <= before.num_files
    msg = (
        f"OPTIMIZE held: {before.num_files} -> {after.num_files} files, rows unchanged ({rows_after})"
        if held else f"OPTIMIZE did not hold: files {before.num_files} -> {after.num_files}, rows {rows_before} -> {rows_after}"
    )
    return OptimizeOutcome(False, sqls, before, after, probe_before, probe_after, metrics, vacuum_files, held, msg)


def summary_of(outcome: OptimizeOutcome, params: Any) -> Summary:
    """The notebook's summary (its last cell): files and the representative query, before and after."""
    from retail_lakehouse.ops.summary import as_parameters, command, of_change

    b, a = outcome.before, outcome.after
    pb, pa = outcome.probe_before, outcome.probe_after
    env = params["env"]
    return of_change(
        "optimize", env=env, dry_run=outcome.dry_run, held=outcome.held,
        symptom=f"slow reads of {outcome.statements[0].split()[1] if outcome.statements else 'the table'}",
        diagnosis=f"{b.small_files} of {b.num_files} data files are small; OPTIMIZE compacts them"
                  + (" and Z-orders by " + ", ".join(params["zorder_by"]) if params["zorder_by"] else "") + ".",
        evidence=f"files {b.num_files} -> {a.num_files}; representative query {pb.seconds}s / {pb.files_read} files "
                 f"read before, {pa.seconds}s / {pa.files_read} after",
        message=outcome.message, parameters=as_parameters(params),
        after="# keep it compact: delta.autoOptimize.optimizeWrite on; check the queries again:\n"
              + command("diagnose_slow_query", env=env, ops_run_id="<OPS_RUN_ID>", table=params["table"].ref),
    )
