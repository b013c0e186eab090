"""Diagnose a slow query: the table's layout and the query's history, then ranked recommendations.

Evidence, all read through the workspace (the same SQL locally and on Databricks):

- `DESCRIBE DETAIL`: files, bytes, partition columns, properties (Z-order/auto-optimize settings);
- per-file sizes from `_metadata` (Databricks), else from `DESCRIBE HISTORY` write metrics (files and
  bytes each commit added since the last rewrite of the table: the files that make up the table);
- `DESCRIBE HISTORY`: the last OPTIMIZE, its Z-order columns, writes since;
- rows per partition value (skew) for partitioned tables;
- query history: the query's (or the table's recent queries') duration and rows, and the columns its
  WHERE clauses filter on (candidates for partitioning or Z-order).

Each recommendation carries the evidence behind it; cluster size comes from the sizing table.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import ParameterError, SqlError
from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.core.tables import TableDef, registry
from retail_lakehouse.ops import cluster_sizing

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.summary import Summary

__all__ = [
    "BROADCAST_RAISE_MAX_BYTES",
    "BROADCAST_THRESHOLD_BYTES",
    "PARAMETERS",
    "SMALL_FILE_BYTES",
    "SlowQueryDiagnosis",
    "SlowQueryFix",
    "fix",
    "summary_of",
    "broadcast_advice",
    "diagnose",
    "file_size_summary",
    "filter_columns",
    "partition_skew",
    "recommend",
    "table_of_query",
]

SMALL_FILE_BYTES = 32 * 1024 * 1024  # a file under 32 MB is "small" (Databricks targets 128 MB - 1 GB)
# Spark's `spark.sql.autoBroadcastJoinThreshold` default: 10 MB. A broadcast table is collected to the
# driver and copied whole into every executor, so a table over a few hundred MB is never broadcast
# (a 10 GB broadcast kills executors); raising the threshold beyond BROADCAST_RAISE_MAX_BYTES is not advised.
BROADCAST_THRESHOLD_BYTES = 10 * 1024 * 1024
BROADCAST_RAISE_MAX_BYTES = 256 * 1024 * 1024
_REWRITES = {"OPTIMIZE", "CREATE TABLE AS SELECT", "CREATE OR REPLACE TABLE AS SELECT", "REPLACE TABLE AS SELECT",
             "RESTORE"}


def _sql(w: WorkspaceClient, statement: str, params: dict[str, Any] | None = None, *, env: str) -> pd.DataFrame:
    from retail_lakehouse.databricks.statements import run_sql

    return run_sql(w, statement, params, env=env)


# ----------------------------------------------------------------------------- pure analysis


def file_size_summary(sizes: list[int]) -> dict[str, Any]:
    """Count, total, median, small-file count and ratio of a list of file sizes (bytes)."""
    import statistics

    n = len(sizes)
    small = sum(1 for s in sizes if s < SMALL_FILE_BYTES)
    return {
        "files": n,
        "bytes": int(sum(sizes)),
        "median_bytes": int(statistics.median(sizes)) if sizes else 0,
        "small_files": small,
        "small_file_ratio": round(small / n, 3) if n else 0.0,
    }


def sizes_from_history(history: pd.DataFrame) -> list[int]:
    """Approximate live file sizes from write commits since the last table rewrite (newest first input).

    Each commit since the last OPTIMIZE / overwrite adds `numFiles` files of `numOutputBytes` bytes;
    every added file is given its commit's average size. A rewrite's own output is included.
    """
    sizes: list[int] = []
    for _, row in history.iterrows():
        metrics = row.get("operationMetrics") or {}
        if isinstance(metrics, str):
            try:
                metrics = json.loads(metrics)
            except ValueError:
                metrics = {}
        files = int(metrics.get("numFiles") or metrics.get("numAddedFiles") or metrics.get("numTargetFilesAdded") or 0)
        out = int(metrics.get("numOutputBytes") or metrics.get("numAddedBytes") or metrics.get("numTargetBytesAdded")
                  or 0)
        if files and out:
            sizes.extend([out // files] * files)
        op = str(row.get("operation") or "")
        params = row.get("operationParameters") or {}
        overwrite = "Overwrite" in str(params.get("mode", "")) if isinstance(params, dict) else False
        if op in _REWRITES or overwrite:
            break
    return sizes


def partition_skew(counts: pd.DataFrame) -> dict[str, Any]:
    """Skew of rows per partition value (`counts` has a `rows` column): max / median."""
    if counts.empty:
        return {"partitions": 0, "skew_ratio": None}
    rows = counts["rows"].astype(float)
    median = float(rows.median()) or 1.0
    return {
        "partitions": len(counts),
        "max_rows": int(rows.max()),
        "median_rows": int(median),
        "skew_ratio": round(float(rows.max()) / median, 2),
    }


_WHERE = re.compile(r"\bwhere\b(.*?)(\bgroup\s+by\b|\border\s+by\b|\blimit\b|\bhaving\b|$)", re.IGNORECASE | re.DOTALL)
_COLUMN = re.compile(r"`?([A-Za-z_][A-Za-z0-9_]*)`?\s*(=|<=|>=|<|>|\bin\b|\bbetween\b|\blike\b)", re.IGNORECASE)


def filter_columns(queries: list[str], columns: list[str]) -> dict[str, int]:
    """How often each table column appears in a WHERE predicate of the queries (pure)."""
    known = {c.lower(): c for c in columns}
    counts: dict[str, int] = {}
    for text in queries:
        for m in _WHERE.finditer(text or ""):
            for c in _COLUMN.finditer(m.group(1)):
                name = known.get(c.group(1).lower())
                if name:
                    counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def table_of_query(text: str, env: str) -> TableDef | None:
    """The first registered table a query names (three-part, schema.table or layer.table)."""
    settings = load_settings(env)
    for m in re.finditer(r"([A-Za-z_][\w]*\.[A-Za-z_][\w]*\.[A-Za-z_][\w]*|[A-Za-z_][\w]*\.[A-Za-z_][\w]*)", text or ""):
        try:
            t = registry().get(m.group(1), settings=settings)
        except Exception:  # noqa: BLE001 - not a table name (e.g. alias.column)
            continue
        if t.layer != "monitoring":
            return t
    return None


def recommend(
    *,
    table: str,
    detail: dict[str, Any],
    files: dict[str, Any],
    skew: dict[str, Any],
    filters: dict[str, int],
    partition_by: list[str],
    zorder_by: list[str],
    writes_since_optimize: int,
    slow_queries: int,
) -> pd.DataFrame:
    """Ranked recommendations, each with its evidence (pure)."""
    import pandas as pd

    recs: list[tuple[float, str, str]] = []  # (score, recommendation, evidence)
    size = int(detail.get("sizeInBytes") or 0)
    n = int(detail.get("numFiles") or 0)
    candidates = [c for c in filters if c not in partition_by]
    zorder_said = False  # Z-order is advised once: in the OPTIMIZE statement, else on its own
    if files["files"] and (files["small_file_ratio"] >= 0.5 and files["files"] >= 16):
        zorder = candidates[:2] or zorder_by
        zorder_said = bool(zorder)
        clause = f" ZORDER BY ({', '.join(zorder)})" if zorder else ""
        why = ("; queries filter on " + ", ".join(f"{c} x{filters[c]}" for c in candidates[:3])) if candidates else ""
        recs.append((
            10 + files["small_file_ratio"] * 10,
            f"OPTIMIZE {table}{clause} to compact small files (then keep delta.autoOptimize.optimizeWrite on).",
            f"{files['small_files']} of {files['files']} files are under 32 MB "
            f"(ratio {files['small_file_ratio']:.0%}, median {files['median_bytes'] / 1024:.0f} KB); "
            f"{writes_since_optimize} writes since the last OPTIMIZE{why}",
        ))
    if not zorder_said and candidates and set(candidates[:2]) - set(zorder_by):
        recs.append((
            8 + min(filters[candidates[0]], 10) / 2,
            f"Z-order by {', '.join(candidates[:2])} (OPTIMIZE ... ZORDER BY) so filters skip files.",
            "filtered on in query history: " + ", ".join(f"{c} x{filters[c]}" for c in candidates[:3])
            + f"; current Z-order: {', '.join(zorder_by) or 'none'}",
        ))
    if not partition_by and size > 1e12 and candidates:
        recs.append((7, f"Partition {table} by a low-cardinality date column among {', '.join(candidates[:2])}.",
                     f"{size / 1e12:.1f} TB unpartitioned"))
    if partition_by and skew.get("skew_ratio") and skew["skew_ratio"] >= 5:
        recs.append((
            6 + min(skew["skew_ratio"], 20) / 5,
            "Partitions are skewed: enable AQE skew handling (spark.sql.adaptive.skewJoin.enabled), "
            "or repartition by a finer key.",
            f"largest partition {skew['max_rows']} rows vs median {skew['median_rows']} "
            f"({skew['skew_ratio']}x) over {skew['partitions']} partitions",
        ))
    if partition_by and n and skew.get("partitions") and skew["partitions"] > 1000:
        recs.append((5, f"Over-partitioned: {skew['partitions']} partitions of {partition_by}; partition coarser.",
                     f"{n} files, {skew['partitions']} partition values"))
    broadcast = broadcast_advice(table, size)
    if broadcast:
        recs.append((3, *broadcast))
    fit = cluster_sizing.size_for(size)
    recs.append((
        1 + (2 if slow_queries else 0),
        f"Cluster size for this table: {fit.describe()}.",
        f"table holds {size / 1e9:.3f} GB; the sizing table's '{fit.name}' covers up to {fit.max_input_gb:g} GB",
    ))
    recs.sort(key=lambda r: -r[0])
    return pd.DataFrame(
        [{"rank": i + 1, "recommendation": r, "evidence": e} for i, (_, r, e) in enumerate(recs)],
        columns=["rank", "recommendation", "evidence"],
    )


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def broadcast_advice(table: str, size: int) -> tuple[str, str] | None:
    """Broadcast-join advice for a table of `size` bytes on disk, with its evidence (None: do not broadcast).

    Spark broadcasts the small side of a join on its own when it is under
    `spark.sql.autoBroadcastJoinThreshold` (BROADCAST_THRESHOLD_BYTES, 10 MB by default). A table up to
    BROADCAST_RAISE_MAX_BYTES may be broadcast with a hint or a modestly raised threshold; a larger one is
    not broadcast (it is held whole by the driver and every executor).
    """
    limit = _mb(BROADCAST_THRESHOLD_BYTES)
    if not size or size > BROADCAST_RAISE_MAX_BYTES:
        return None
    if size <= BROADCAST_THRESHOLD_BYTES:
        return (f"When {table} is the small side of a join, Spark broadcasts it already "
                f"(spark.sql.autoBroadcastJoinThreshold, {limit} by default); if the plan still shows a "
                "sort-merge join, hint /*+ BROADCAST */.",
                f"{_mb(size)} on disk, under the {limit} default broadcast threshold ({BROADCAST_THRESHOLD_BYTES} bytes)")
    wanted = min(BROADCAST_RAISE_MAX_BYTES, 2 ** math.ceil(math.log2(size)))
    return (f"When {table} is the small side of a join, it is over the {limit} default broadcast threshold: "
            f"hint /*+ BROADCAST */ or raise spark.sql.autoBroadcastJoinThreshold modestly, to {_mb(wanted)} "
            f"(never beyond {_mb(BROADCAST_RAISE_MAX_BYTES)}), and only if driver and executor memory hold "
            "several times the table (it is decompressed and copied to every executor).",
            f"{_mb(size)} on disk, over the {limit} default threshold ({BROADCAST_THRESHOLD_BYTES} bytes) and "
            f"under {_mb(BROADCAST_RAISE_MAX_BYTES)}")


# ----------------------------------------------------------------------------- I/O


@dataclass
class SlowQueryDiagnosis:
    """The diagnosis of a table (and the query that pointed at it).

    Attributes:
        table: full name.
        detail: DESCRIBE DETAIL's row.
        file_sizes: file sizes in bytes (exact or approximated; see `file_size_source`).
        files: summary (files, bytes, median, small files, ratio).
        skew: partition skew measures.
        partition_rows: rows per partition value.
        history: DESCRIBE HISTORY (newest first).
        queries: query history rows that touch the table (or the one query).
        filters: WHERE column -> count.
        recommendations: ranked, with evidence.
        cause: small_files, missing_zorder, skew, or none (the top finding).
        diagnosis: one plain sentence.
    """

    table: str
    detail: dict[str, Any]
    file_sizes: list[int]
    file_size_source: str
    files: dict[str, Any]
    skew: dict[str, Any]
    partition_rows: pd.DataFrame
    history: pd.DataFrame
    queries: pd.DataFrame
    filters: dict[str, int]
    zorder_by: list[str]
    recommendations: pd.DataFrame
    cause: str
    diagnosis: str
    extra: dict[str, Any] = field(default_factory=dict)


def _file_sizes(w: WorkspaceClient, full: str, history: pd.DataFrame, detail: dict[str, Any], env: str) -> tuple[list[int], str]:
    try:
        frame = _sql(w, f"SELECT _metadata.file_path AS path, max(_metadata.file_size) AS size FROM {full} "
                        "GROUP BY _metadata.file_path", env=env)
        return [int(s) for s in frame["size"]], "_metadata"
    except SqlError:
        pass
    sizes = sizes_from_history(history)
    n, total = int(detail.get("numFiles") or 0), int(detail.get("sizeInBytes") or 0)
    if len(sizes) != n and n:
        # History was trimmed or a file was removed: fall back to the current average per file.
        return [total // n] * n, "average (DESCRIBE DETAIL)"
    return sizes, "DESCRIBE HISTORY write metrics"


def _last_optimize(history: pd.DataFrame) -> tuple[int, list[str]]:
    writes = 0
    for _, row in history.iterrows():
        if row.get("operation") == "OPTIMIZE":
            params = row.get("operationParameters") or {}
            raw = params.get("zOrderBy") if isinstance(params, dict) else None
            try:
                cols = json.loads(raw) if isinstance(raw, str) else list(raw or [])
            except ValueError:
                cols = []
            return writes, [str(c) for c in cols]
        writes += 1
    return writes, []


_QUERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def check_query_id(value: str) -> str:
    """Validate a query id (empty allowed).

    Raises:
        ParameterError: characters a query id does not have.
    """
    text = str(value or "").strip()
    if text and not _QUERY_ID.match(text):
        raise ParameterError("query_id", f"{text!r} is not a query id; copy it from the warehouse's query history")
    return text


# The notebook's parameters beyond their annotations (see core.params): a query id, when given,
# names the table, so `table` is then not read.
ACTIONS = ("none", "optimize")
PARAMETERS = Parameters(
    table=Param("table", unless="query_id"),
    query_id=Param(required=False, check=check_query_id),
    action=Param("choice", choices=ACTIONS),
)


def resolve_target(w: WorkspaceClient, table: str, query_id: str, *, env: str) -> tuple[TableDef, pd.DataFrame]:
    """The table to diagnose and the query history rows about it.

    Raises:
        ParameterError: neither given, an unknown query id, or a query naming no registered table.
    """
    import pandas as pd

    from retail_lakehouse.databricks.workspace import query_history

    if query_id:
        # Asked for by id: found however old it is (not only among the latest 200).
        rows = query_history(w, query_ids=[query_id], max_results=10)
        rows = rows[rows["query_id"] == query_id] if len(rows) else pd.DataFrame()
        if rows.empty:
            raise ParameterError("query_id", f"no query {query_id!r} in the query history; copy the id from "
                                 "the SQL warehouse's query history page")
        tdef = table_of_query(str(rows["query_text"].iloc[0]), env)
        if tdef is None:
            raise ParameterError("query_id", "the query names no registered table; pass -p table NAME instead")
        return tdef, rows
    if not table:
        raise ParameterError("table", "give a table (e.g. silver.orders) or a query_id")
    history = query_history(w, max_results=200)
    tdef = registry().get(table)
    full = tdef.full_name(load_settings(env))
    about = history[history["query_text"].fillna("").str.contains(full, regex=False)] if len(history) else history
    # Our own diagnostic statements are not the workload.
    if len(about):
        about = about[~about["query_text"].str.contains(r"_metadata|DESCRIBE|GROUP BY `?\w+`? ORDER BY rows", regex=True)]
    return tdef, about.reset_index(drop=True)


def diagnose(w: WorkspaceClient, tdef: TableDef, queries: pd.DataFrame, *, env: str) -> SlowQueryDiagnosis:
    """Diagnose a table's layout and its queries.

    Args:
        w: workspace client.
        tdef: the registry table.
        queries: query history rows about it (see `resolve_target`).
        env: environment.
    """
    import pandas as pd

    full = tdef.full_name(load_settings(env))
    detail = _sql(w, f"DESCRIBE DETAIL {full}", env=env).iloc[0].to_dict()
    history = _sql(w, f"DESCRIBE HISTORY {full}", env=env)
    sizes, source = _file_sizes(w, full, history, detail, env)
    files = file_size_summary(sizes)
    partition_by = list(detail.get("partitionColumns") or [])
    partition_rows = pd.DataFrame(columns=["value", "rows"])
    if partition_by:
        col = partition_by[0]
        partition_rows = _sql(w, f"SELECT CAST(`{col}` AS STRING) AS value, COUNT(*) AS rows FROM {full} "
                                 f"GROUP BY `{col}` ORDER BY rows DESC", env=env)
    skew = partition_skew(partition_rows)
    writes_since, zorder_by = _last_optimize(history)
    texts = [str(t) for t in queries["query_text"]] if len(queries) else []
    filters = filter_columns(texts, list(tdef.columns))
    slow = int((queries["duration_ms"].fillna(0) > 1000).sum()) if len(queries) else 0
    recs = recommend(table=full, detail=detail, files=files, skew=skew, filters=filters, partition_by=partition_by,
                     zorder_by=zorder_by, writes_since_optimize=writes_since, slow_queries=slow)
    top = str(recs["recommendation"].iloc[0]) if len(recs) else ""
    if top.startswith("OPTIMIZE"):
        cause = "small_files"
        diagnosis = (f"{full} is slow to read because it is made of many small files: {files['small_files']} of "
                     f"{files['files']} files under 32 MB (median {files['median_bytes'] / 1024:.0f} KB). "
                     "Compact it with recommendation 1.")
    elif top.startswith("Z-order"):
        cause = "missing_zorder"
        diagnosis = f"{full}: queries filter on {', '.join(list(filters)[:2])}, which neither partitioning nor Z-order covers."
    elif top.startswith("Partitions are skewed"):
        cause = "skew"
        diagnosis = f"{full}: partitions are skewed ({skew['skew_ratio']}x the median)."
    else:
        cause = "none"
        diagnosis = (f"{full}: layout is healthy ({files['files']} files, {files['small_file_ratio']:.0%} small); "
                     "look at the query plan and the cluster size instead.")
    return SlowQueryDiagnosis(full, detail, sizes, source, files, skew, partition_rows, history, queries, filters,
                              zorder_by, recs, cause, diagnosis)


@dataclass
class SlowQueryFix:
    """The recommended OPTIMIZE (ZORDER), run, and the slow queries timed before and after it.

    Attributes:
        optimize: what the OPTIMIZE did (`optimize.OptimizeOutcome`; a dry run changes nothing).
        timings: per slow query: a short label, seconds before and after the OPTIMIZE (after: None in a
            dry run) and its text.
    """

    optimize: Any
    timings: pd.DataFrame

    @property
    def dry_run(self) -> bool:
        return bool(self.optimize.dry_run)

    @property
    def held(self) -> bool:
        return bool(self.optimize.held)

    def speedup(self) -> str:
        """Total seconds of the slow queries, before -> after (e.g. ``1.92 s -> 0.41 s``)."""
        before = float(self.timings["before_s"].sum())
        if self.dry_run or self.timings["after_s"].isna().all():
            return f"{before:.2f} s before (dry run: not optimized)"
        return f"{before:.2f} s -> {float(self.timings['after_s'].sum()):.2f} s"


def zorder_columns(d: SlowQueryDiagnosis) -> list[str]:
    """The Z-order columns the diagnosis recommends: the columns slow queries filter on, not partitioning."""
    partitioned = list(d.detail.get("partitionColumns") or [])
    return [c for c in d.filters if c not in partitioned][:2] or list(d.zorder_by)


def _time(w: WorkspaceClient, statement: str, env: str) -> float:
    import time

    started = time.perf_counter()
    _sql(w, statement, env=env)
    return round(time.perf_counter() - started, 3)


def fix(
    w: WorkspaceClient,
    d: SlowQueryDiagnosis,
    tdef: TableDef,
    *,
    env: str,
    dry_run: bool,
    confirm: bool,
    record: Any = None,
    max_queries: int = 3,
) -> SlowQueryFix:
    """Run the recommended OPTIMIZE (ZORDER BY the filtered columns) and time the slow queries around it.

    Each distinct slow query (its text from the query history) runs once to warm up, then is timed before
    the OPTIMIZE and again after it, on the same warehouse.

    Raises:
        ConfirmationRequired: a real OPTIMIZE in qa/prod without `confirm` (nothing changed).
        ParameterError: the diagnosis found no layout problem OPTIMIZE fixes.
    """
    import pandas as pd

    from retail_lakehouse.ops import optimize
    from retail_lakehouse.ops.summary import one_line

    if d.cause not in ("small_files", "missing_zorder"):
        raise ParameterError("action", f"the diagnosis is {d.cause!r}: OPTIMIZE would not fix it; "
                             "run the diagnosis without action optimize")
    texts = list(dict.fromkeys(str(t) for t in d.queries["query_text"]))[:max_queries] if len(d.queries) else []
    before = {}
    for text in texts:
        _sql(w, text, env=env)  # warm-up: caches and the engine's first-query cost out of the timing
        before[text] = _time(w, text, env)
    outcome = optimize.run(w, tdef, env=env, preds=[], zorder=zorder_columns(d), vacuum=False,
                           retention_hours=168, dry_run=dry_run, confirm=confirm, record=record)
    after = {text: (None if dry_run else _time(w, text, env)) for text in texts}
    timings = pd.DataFrame(
        [{"label": f"query {i + 1}", "before_s": before[t], "after_s": after[t], "query": one_line(t, 120)}
         for i, t in enumerate(texts)],
        columns=["label", "before_s", "after_s", "query"],
    )
    return SlowQueryFix(outcome, timings)


def summary_of(d: SlowQueryDiagnosis, *, env: str, fixed: SlowQueryFix | None = None) -> Summary:
    """The notebook's summary (its last cell): why reads are slow and the OPTIMIZE that fixes it."""
    from retail_lakehouse.ops.summary import Summary, command

    f = d.files
    if fixed is not None:
        o = fixed.optimize
        evidence = (f"files {o.before.num_files} -> {o.after.num_files}; slow queries {fixed.speedup()}; "
                    f"filters in query history: {', '.join(f'{c} x{n}' for c, n in d.filters.items()) or 'none'}")
        parts = d.table.split(".")
        short = f"{parts[-2].rsplit('_', 1)[-1]}.{parts[-1]}" if len(parts) >= 2 else d.table
        if fixed.dry_run:
            real = {"ops_run_id": "<OPS_RUN_ID>", "table": short, "action": "optimize", "dry_run": False,
                    **({"confirm": True} if env in ("qa", "prod") else {})}
            return Summary("diagnose_slow_query", "DRY RUN", f"queries on {d.table} are slow", d.diagnosis, evidence,
                           "# nothing changed yet; run the OPTIMIZE for real:\n"
                           + command("diagnose_slow_query", env=env, **real), f"Dry run: {o.message}")
        step = ("# keep it compact: set delta.autoOptimize.optimizeWrite on the table, and check again after "
                "the next loads:\n" + command("diagnose_slow_query", env=env, ops_run_id="<OPS_RUN_ID>", table=short))
        return Summary("diagnose_slow_query", "HELD" if fixed.held else "DID NOT HOLD",
                       f"queries on {d.table} are slow", d.diagnosis, evidence, step, o.message)
    slowest = (f"; slowest query {int(d.queries['duration_ms'].max())} ms" if len(d.queries) else "")
    evidence = (f"{f.get('small_files')} of {f.get('files')} files under 32 MB (median "
                f"{(f.get('median_bytes') or 0) / 1024:.0f} KB); filters in query history: "
                f"{', '.join(f'{c} x{n}' for c, n in d.filters.items()) or 'none'}; Z-order: "
                f"{', '.join(d.zorder_by) or 'none'}{slowest}")
    first = d.recommendations.iloc[0] if len(d.recommendations) else None
    parts = d.table.split(".")  # catalog.<env>_<layer>.name -> layer.name
    short = f"{parts[-2].rsplit('_', 1)[-1]}.{parts[-1]}" if len(parts) >= 2 else d.table
    if d.cause in ("small_files", "missing_zorder"):
        candidates = [c for c in d.filters if c not in (d.detail.get("partitionColumns") or [])][:2]
        step = ("# compact (and Z-order) it; the optimize notebook times a representative query before and after:\n"
                + command("optimize", env=env, ops_run_id="<OPS_RUN_ID>", table=short,
                          zorder_by=",".join(candidates)))
    else:
        step = f"# {first['recommendation']}" if first is not None else "Nothing to do."
    return Summary("diagnose_slow_query", "DIAGNOSED" if d.cause != "none" else "NOTHING TO DO",
                   f"queries on {d.table} are slow", d.diagnosis, evidence, step, "Diagnosis only; nothing changed.")
