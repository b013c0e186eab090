"""Databricks Delta utility statements served locally by delta-rs.

Sail 0.7 cannot parse `DESCRIBE HISTORY`, `DESCRIBE DETAIL`, `OPTIMIZE`, `VACUUM`, `RESTORE`,
`SHOW TBLPROPERTIES` or `ALTER TABLE ... SET/UNSET TBLPROPERTIES`. The engine's `sql()` asks
`is_delta_utility()` first and sends these here; `execute()` answers with the columns Databricks
documents, so ops code issues the same SQL text locally and on Databricks.

`refuse_unsupported()` stops Databricks-only features the local engine cannot honour (Change Data
Feed) before anything runs, whichever route the statement would take.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from retail_lakehouse.core.errors import (
    LakehouseError,
    RetentionTooShortError,
    SqlError,
    TableNotFoundError,
    UnsupportedLocallyError,
    VersionNotFoundError,
)
from retail_lakehouse.engine._delta_sql_lex import bind_parameters, tokenize
from retail_lakehouse.engine._delta_sql_parse import (
    AddColumns,
    DescribeDetail,
    DescribeHistory,
    Optimize,
    Restore,
    SetTblProperties,
    ShowTblProperties,
    TableRef,
    UnsetTblProperties,
    Vacuum,
    calls_function,
    command_of,
    parse,
    table_properties_in,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [
    "CDF_DEFAULT_CONF", "CDF_PROPERTY", "DeltaSqlOptions", "bind_parameters", "change_data_feed_error", "execute",
    "is_delta_utility", "refuse_unsupported",
]

HISTORY_COLUMNS = [
    "version", "timestamp", "userId", "userName", "operation", "operationParameters", "job", "notebook",
    "clusterId", "readVersion", "isolationLevel", "isBlindAppend", "operationMetrics", "userMetadata",
    "engineInfo",
]
DETAIL_COLUMNS = [
    "format", "id", "name", "description", "location", "createdAt", "lastModified", "partitionColumns",
    "clusteringColumns", "numFiles", "sizeInBytes", "properties", "minReaderVersion", "minWriterVersion",
    "tableFeatures", "statistics",
]
RESTORE_COLUMNS = [
    "table_size_after_restore", "num_of_files_after_restore", "num_removed_files", "num_restored_files",
    "removed_files_size", "restored_files_size",
]
DEFAULT_RETENTION_HOURS = 168

# Table features implied by legacy (pre-table-features) protocol versions, as Databricks lists them.
_LEGACY_WRITER_FEATURES = {
    2: ["appendOnly", "invariants"],
    3: ["checkConstraints"],
    4: ["changeDataFeed", "generatedColumns"],
    5: ["columnMapping"],
    6: ["identityColumns"],
}
# Delta properties delta-rs stores; any other `delta.*` key is a typo Databricks would reject too.
_KNOWN_DELTA_PROPERTIES = {
    "delta.appendOnly", "delta.autoOptimize.autoCompact", "delta.autoOptimize.optimizeWrite",
    "delta.checkpoint.writeStatsAsJson", "delta.checkpoint.writeStatsAsStruct", "delta.checkpointInterval",
    "delta.checkpointPolicy", "delta.columnMapping.mode", "delta.dataSkippingNumIndexedCols",
    "delta.dataSkippingStatsColumns", "delta.deletedFileRetentionDuration", "delta.enableChangeDataFeed",
    "delta.enableDeletionVectors", "delta.enableRowTracking", "delta.enableTypeWidening",
    "delta.isolationLevel", "delta.logRetentionDuration", "delta.randomizeFilePrefixes",
    "delta.randomPrefixLength", "delta.setTransactionRetentionDuration", "delta.targetFileSize",
    "delta.tuneFileSizesForRewrites", "delta.parquet.compression.codec",
    "delta.universalFormat.enabledFormats", "delta.enableIcebergCompatV2",
}
_BOOLEAN_DELTA_PROPERTIES = {
    "delta.appendOnly", "delta.autoOptimize.autoCompact", "delta.autoOptimize.optimizeWrite",
    "delta.checkpoint.writeStatsAsJson", "delta.checkpoint.writeStatsAsStruct", "delta.enableChangeDataFeed",
    "delta.enableDeletionVectors", "delta.enableRowTracking", "delta.enableTypeWidening",
    "delta.randomizeFilePrefixes", "delta.tuneFileSizesForRewrites", "delta.enableIcebergCompatV2",
}


@dataclass(frozen=True)
class DeltaSqlOptions:
    """Session settings that change how utility statements behave.

    Attributes:
        retention_check: mirrors `spark.databricks.delta.retentionDurationCheck.enabled`; when True a
            VACUUM with `RETAIN n HOURS` under `min_retention_hours` is refused.
        min_retention_hours: the runbook's minimum retention (7 days).
    """

    retention_check: bool = True
    min_retention_hours: int = DEFAULT_RETENTION_HOURS


CDF_PROPERTY = "delta.enableChangeDataFeed"
CDF_DEFAULT_CONF = "spark.databricks.delta.properties.defaults.enableChangeDataFeed"


def change_data_feed_error(what: str) -> UnsupportedLocallyError:
    """The refusal of a Change Data Feed statement, `what` naming the statement (nothing has run yet)."""
    return UnsupportedLocallyError(
        f"{what} is refused locally: Change Data Feed is a Databricks-only feature of this lakehouse. The "
        f"local engine (Sail) cannot write to a table with {CDF_PROPERTY} = true (every INSERT, UPDATE and "
        "MERGE would fail) and writes no change data, so nothing was changed. On Databricks targets the "
        "tables get the property and table_changes() reads their changes there. Locally, process "
        "increments by the watermark column instead: keep each step's last_processed_timestamp in the "
        "watermarks table (retail_lakehouse.engine.watermarks: get_watermark / set_watermark) and read the rows "
        "newer than it."
    )


def _enables_cdf(key: str, value: str) -> bool:
    return key.strip().lower() == CDF_PROPERTY.lower() and value.strip().lower() == "true"


def refuse_unsupported(statement: str, args: Mapping[str, object] | None = None) -> None:
    """Refuse a Databricks-only feature before anything runs, whichever route the statement takes.

    Refused: `TBLPROPERTIES (... 'delta.enableChangeDataFeed' = true ...)` in CREATE, REPLACE or
    ALTER (any key casing, quoted or not; `false` passes) and reading changes with `table_changes(...)`.

    Raises:
        UnsupportedLocallyError: the statement uses Change Data Feed.
    """
    lower = statement.lower()
    if "enablechangedatafeed" not in lower and "table_changes" not in lower:
        return  # the common case: no tokenizing
    if args:
        with contextlib.suppress(SqlError):  # reported by whoever runs it; check the text as written
            statement = bind_parameters(statement, args)
    if "tblproperties" in lower:
        for key, value in table_properties_in(statement).items():
            if _enables_cdf(key, value):
                raise change_data_feed_error(f"TBLPROPERTIES ('{key}' = '{value}')")
    if "table_changes" in lower and calls_function(statement, "table_changes"):
        raise change_data_feed_error("reading a Change Data Feed with table_changes(...)")


def is_delta_utility(statement: str) -> bool:
    """Tell whether a statement is a Delta utility statement this module serves.

    Args:
        statement: SQL text, parameters bound or not; leading whitespace and comments are ignored.

    Returns:
        True for DESCRIBE HISTORY/DETAIL, OPTIMIZE, VACUUM, RESTORE, SHOW TBLPROPERTIES and
        ALTER TABLE ... SET/UNSET TBLPROPERTIES, malformed or not (so `execute` explains the syntax).
    """
    return command_of(tokenize(statement, lenient=True)) is not None


def execute(
    statement: str,
    args: Mapping[str, object] | None,
    resolve: Callable[[str], Path],
    options: DeltaSqlOptions = DeltaSqlOptions(),  # noqa: B008 - frozen, so a shared default is safe
) -> pd.DataFrame:
    """Run one Delta utility statement with delta-rs.

    Args:
        statement: Databricks SQL text, e.g. `VACUUM IDENTIFIER(:t) RETAIN 240 HOURS DRY RUN`.
        args: named parameter values (see `bind_parameters`).
        resolve: maps a table name as written (`retail_datalake.prod_gold.fact_sales`) to the table's
            directory; raises TableNotFoundError itself. Not called for delta.`/abs/path`.
        options: session settings (VACUUM retention check).

    Returns:
        The result frame with the columns Databricks documents for the statement (empty for ALTER).

    Raises:
        SqlError: malformed statement or a delta-rs failure (message names the table); subclasses
            VersionNotFoundError (RESTORE target missing) and RetentionTooShortError (VACUUM guard).
        TableNotFoundError: the name does not resolve to a Delta table.
    """
    bound = bind_parameters(statement, args)
    stmt = parse(bound)
    directory = _resolve(stmt.table, resolve)
    handler = _HANDLERS[type(stmt)]
    try:
        return handler(stmt, directory, options)
    except LakehouseError:
        raise
    except Exception as exc:  # delta-rs raises its own DeltaError/OSError/...: name the table
        raise SqlError(f"{bound.strip()!r} failed on table {stmt.table.name} ({directory}): "
                       f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def _resolve(table: TableRef, resolve: Callable[[str], Path]) -> Path:
    from deltalake import DeltaTable

    directory = Path(table.path) if table.path is not None else Path(resolve(table.name))
    if not DeltaTable.is_deltatable(str(directory)):
        raise TableNotFoundError(table.name, f"table {table.name}: no Delta table at {directory} "
                                 "(no _delta_log); write the table first or check the name")
    return directory


def _open(directory: Path, version: int | None = None) -> DeltaTable:
    from deltalake import DeltaTable

    return DeltaTable(str(directory), version=version)


def _ms_to_ts(ms: object) -> pd.Timestamp | None:
    if ms is None:
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")  # type: ignore[call-overload]


def _str_map(value: object) -> dict[str, str] | None:
    """Databricks shows operationParameters/operationMetrics as map<string,string>."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return {"value": str(value)}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _add_actions(dt: DeltaTable) -> pd.DataFrame:
    import pyarrow as pa

    frame = pa.table(dt.get_add_actions(flatten=True)).to_pandas()
    return frame if len(frame.columns) else pd.DataFrame({"path": [], "size_bytes": []})


def _commit_timestamps(dt: DeltaTable) -> dict[int, int]:
    """Commit time (ms) by version, for every version whose commit is still in the log."""
    return {int(h["version"]): int(h["timestamp"]) for h in dt.history() if "version" in h}


_INTERVAL = re.compile(r"^\s*(?:interval\s+)?(\d+(?:\.\d+)?)\s*(week|day|hour|minute|second)s?\s*$",
                       re.IGNORECASE)
_UNIT_HOURS = {"week": 168.0, "day": 24.0, "hour": 1.0, "minute": 1 / 60, "second": 1 / 3600}


def _interval_hours(text: str) -> float | None:
    m = _INTERVAL.match(text)
    return float(m.group(1)) * _UNIT_HOURS[m.group(2).lower()] if m else None


# ---------------------------------------------------------------------------------------------------
# Handlers: (statement, table directory, options) -> result frame
# ---------------------------------------------------------------------------------------------------


def _describe_history(stmt: DescribeHistory, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    entries = _open(directory).history(limit=stmt.limit)
    rows = []
    for h in entries:
        row: dict[str, Any] = {c: h.get(c) for c in HISTORY_COLUMNS}
        row["timestamp"] = _ms_to_ts(h.get("timestamp"))
        row["operationParameters"] = _str_map(h.get("operationParameters"))
        row["operationMetrics"] = _str_map(h.get("operationMetrics"))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame = frame.sort_values("version", ascending=False, ignore_index=True)
    frame["version"] = frame["version"].astype("int64")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["readVersion"] = frame["readVersion"].astype("Int64")
    return frame


def _table_features(dt: DeltaTable) -> list[str]:
    protocol = dt.protocol()
    if protocol.reader_features or protocol.writer_features:
        return sorted(set(protocol.reader_features or []) | set(protocol.writer_features or []))
    features = [f for v, fs in _LEGACY_WRITER_FEATURES.items() if protocol.min_writer_version >= v for f in fs]
    return sorted(set(features))


def _describe_detail(stmt: DescribeDetail, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    dt = _open(directory)
    meta = dt.metadata()
    protocol = dt.protocol()
    adds = _add_actions(dt)
    last = dt.history(limit=1)
    dv_col = "deletionVector.cardinality"
    row = {
        "format": "delta",
        "id": meta.id,
        "name": None if stmt.table.path is not None else stmt.table.name,
        "description": meta.description,
        "location": str(directory.resolve()),
        "createdAt": _ms_to_ts(meta.created_time),
        "lastModified": _ms_to_ts(last[0].get("timestamp")) if last else None,
        "partitionColumns": list(meta.partition_columns),
        "clusteringColumns": [],  # liquid clustering lives in domain metadata, which delta-rs does not expose
        "numFiles": len(adds),
        "sizeInBytes": int(adds["size_bytes"].sum()) if len(adds) else 0,
        "properties": dict(meta.configuration),
        "minReaderVersion": protocol.min_reader_version,
        "minWriterVersion": protocol.min_writer_version,
        "tableFeatures": _table_features(dt),
        "statistics": {
            "numRowsDeletedByDeletionVectors": int(adds[dv_col].fillna(0).sum()) if dv_col in adds else 0,
            "numDeletionVectors": int(adds[dv_col].notna().sum()) if dv_col in adds else 0,
        },
    }
    return pd.DataFrame([row], columns=DETAIL_COLUMNS)


def _optimize(stmt: Optimize, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    dt = _open(directory)
    partition_cols = list(dt.metadata().partition_columns)
    columns = [f.name for f in dt.schema().fields]
    for pred in stmt.where:
        if pred.column not in partition_cols:
            raise SqlError(
                f"OPTIMIZE {stmt.table.name} WHERE may only use partition columns "
                f"({', '.join(partition_cols) or 'the table has none'}); {pred.column!r} is not one. "
                "Drop the WHERE clause or filter on a partition column."
            )
    for col in stmt.zorder:
        if col in partition_cols:
            raise SqlError(f"OPTIMIZE {stmt.table.name} ZORDER BY {col}: {col!r} is a partition column; "
                           "Z-ordering by a partition column is pointless: choose non-partition columns")
        if col not in columns:
            raise SqlError(f"OPTIMIZE {stmt.table.name} ZORDER BY: column {col!r} does not exist "
                           f"(columns: {', '.join(columns)})")
    filters = [(p.column, p.op, p.value) for p in stmt.where] or None
    if stmt.zorder:
        raw = dt.optimize.z_order(stmt.zorder, partition_filters=filters)  # type: ignore[arg-type]
    else:
        raw = dt.optimize.compact(partition_filters=filters)  # type: ignore[arg-type]
    metrics: dict[str, Any] = {}
    for key, value in raw.items():
        # delta-rs returns the file-size summaries as JSON text; Databricks shows them as structs.
        metrics[key] = json.loads(value) if key in ("filesAdded", "filesRemoved") and isinstance(value, str) \
            else value
    return pd.DataFrame([{"path": str(directory.resolve()), "metrics": metrics}], columns=["path", "metrics"])


def _vacuum(stmt: Vacuum, directory: Path, options: DeltaSqlOptions) -> pd.DataFrame:
    dt = _open(directory)
    if stmt.retain_hours is None:
        configured = dt.metadata().configuration.get("delta.deletedFileRetentionDuration")
        hours = _interval_hours(configured) if configured else None
        if configured and hours is None:
            raise SqlError(f"table {stmt.table.name}: cannot read delta.deletedFileRetentionDuration "
                           f"{configured!r}; set it like 'interval 7 days'")
        retain = hours if hours is not None else float(DEFAULT_RETENTION_HOURS)
    else:
        retain = stmt.retain_hours
        if options.retention_check and retain < options.min_retention_hours:
            days = options.min_retention_hours / 24
            raise RetentionTooShortError(
                f"VACUUM {stmt.table.name} RETAIN {retain:g} HOURS refused: retention {retain:g} h is under "
                f"the runbook's {options.min_retention_hours} h ({days:g} days). Files still needed by time "
                "travel (VERSION AS OF / RESTORE) and by concurrent readers or writers would be deleted and "
                "those queries would break. Nothing was deleted. To override, run "
                "`SET spark.databricks.delta.retentionDurationCheck.enabled = false` and re-run the VACUUM, "
                "only if you accept losing time travel beyond the retention."
            )
    # delta-rs takes whole hours; round up so we never delete more than asked.
    files = dt.vacuum(retention_hours=math.ceil(retain), dry_run=stmt.dry_run,
                      enforce_retention_duration=False, full=stmt.full)
    location = directory.resolve()
    paths = sorted(str(location / f) for f in files)
    if stmt.dry_run:
        return pd.DataFrame({"path": paths}, dtype="object")
    frame = pd.DataFrame({"path": [str(location)]})
    frame.attrs["files_deleted"] = paths
    frame.attrs["num_files_deleted"] = len(paths)
    return frame


def _restore_target(stmt: Restore, dt: DeltaTable) -> int:
    """The version to restore to; raise VersionNotFoundError before touching anything."""
    stamps = _commit_timestamps(dt)
    latest = dt.version()
    earliest = min(stamps) if stamps else latest
    if stmt.version is not None:
        if not earliest <= stmt.version <= latest:
            raise VersionNotFoundError(
                f"cannot RESTORE {stmt.table.name} to version {stmt.version}: versions "
                f"{earliest}..{latest} exist. Pick one from DESCRIBE HISTORY {stmt.table.name}."
            )
        return stmt.version
    assert stmt.timestamp is not None
    try:
        ts = pd.Timestamp(stmt.timestamp)
    except ValueError as exc:
        raise SqlError(f"RESTORE {stmt.table.name}: cannot read timestamp {stmt.timestamp!r}: {exc}") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    ms = ts.value // 1_000_000
    eligible = [v for v, t in stamps.items() if t <= ms]
    if not eligible:
        first = _ms_to_ts(stamps.get(earliest))
        raise VersionNotFoundError(
            f"cannot RESTORE {stmt.table.name} to timestamp {ts}: it is before the earliest available "
            f"commit (version {earliest} at {first}); versions {earliest}..{latest} exist."
        )
    return max(eligible)


def _restore(stmt: Restore, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    dt = _open(directory)
    target = _restore_target(stmt, dt)
    before = _add_actions(dt)
    if target == dt.version():
        # delta-rs refuses to restore the current version; Databricks treats it as a no-op.
        raw: dict[str, Any] = {"numRemovedFile": 0, "numRestoredFile": 0}
    else:
        try:
            raw = dt.restore(target)
        except Exception as exc:
            if "missing file" not in str(exc).lower():
                raise
            raise SqlError(
                f"cannot RESTORE {stmt.table.name} to version {target}: its data files were removed by "
                f"VACUUM ({exc}). Nothing was changed; restore a version newer than the last VACUUM's "
                "retention window (see DESCRIBE HISTORY)."
            ) from exc
    after = _add_actions(_open(directory))
    removed = before[~before["path"].isin(after["path"])]
    restored = after[~after["path"].isin(before["path"])]
    row = {
        "table_size_after_restore": int(after["size_bytes"].sum()),
        "num_of_files_after_restore": len(after),
        "num_removed_files": int(raw.get("numRemovedFile", len(removed))),
        "num_restored_files": int(raw.get("numRestoredFile", len(restored))),
        "removed_files_size": int(removed["size_bytes"].sum()),
        "restored_files_size": int(restored["size_bytes"].sum()),
    }
    return pd.DataFrame([row], columns=RESTORE_COLUMNS)


def _all_properties(dt: DeltaTable) -> dict[str, str]:
    protocol = dt.protocol()
    props = dict(dt.metadata().configuration)
    props["delta.minReaderVersion"] = str(protocol.min_reader_version)
    props["delta.minWriterVersion"] = str(protocol.min_writer_version)
    for feature in sorted(set(protocol.reader_features or []) | set(protocol.writer_features or [])):
        props[f"delta.feature.{feature}"] = "supported"
    return props


def _show_tblproperties(stmt: ShowTblProperties, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    props = _all_properties(_open(directory))
    if stmt.key is None:
        items = sorted(props.items())
    else:
        items = [(stmt.key, props.get(stmt.key, f"Table {stmt.table.name} does not have property: {stmt.key}"))]
    return pd.DataFrame(items, columns=["key", "value"], dtype="object")


def _set_tblproperties(stmt: SetTblProperties, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    for key, value in stmt.properties.items():
        if _enables_cdf(key, value):
            raise change_data_feed_error(f"ALTER TABLE {stmt.table.name} SET TBLPROPERTIES ('{key}' = '{value}')")
        if key.startswith("delta.feature.") or key in ("delta.minReaderVersion", "delta.minWriterVersion"):
            raise SqlError(f"ALTER TABLE {stmt.table.name} SET TBLPROPERTIES ({key!r}): protocol upgrades are "
                           "not supported locally (delta-rs would not upgrade the protocol); do it on Databricks")
        if key.startswith("delta.") and key not in _KNOWN_DELTA_PROPERTIES:
            raise SqlError(f"ALTER TABLE {stmt.table.name}: unknown Delta property {key!r}; known: "
                           f"{', '.join(sorted(_KNOWN_DELTA_PROPERTIES))}")
        if key in _BOOLEAN_DELTA_PROPERTIES and value.lower() not in ("true", "false"):
            raise SqlError(f"ALTER TABLE {stmt.table.name}: {key} must be 'true' or 'false', got {value!r}")
        if key.endswith("RetentionDuration") and _interval_hours(value) is None:
            raise SqlError(f"ALTER TABLE {stmt.table.name}: {key} must look like 'interval 7 days', got {value!r}")
    # delta-rs only accepts keys it knows when raise_if_not_exists=True (it rejects e.g. `quality`);
    # delta.* keys were checked above, so let the custom ones through.
    _open(directory).alter.set_table_properties(dict(stmt.properties), raise_if_not_exists=False)
    return pd.DataFrame()


def _unset_tblproperties(stmt: UnsetTblProperties, directory: Path, _: DeltaSqlOptions) -> pd.DataFrame:
    config = _open(directory).metadata().configuration
    present = [k for k in stmt.keys if k in config]
    missing = [k for k in stmt.keys if k not in config]
    if missing and not stmt.if_exists:
        raise SqlError(f"ALTER TABLE {stmt.table.name} UNSET TBLPROPERTIES: property {missing[0]!r} does not "
                       "exist; add IF EXISTS to ignore missing keys")
    if not present:
        return pd.DataFrame()
    raise SqlError(
        f"ALTER TABLE {stmt.table.name} UNSET TBLPROPERTIES ({', '.join(present)}) is not supported locally: "
        "delta-rs cannot remove table properties. Set the property to its default value with "
        "SET TBLPROPERTIES instead, or run the UNSET on Databricks."
    )


_DELTA_TYPES = {"int": "integer", "bigint": "long", "smallint": "short", "tinyint": "byte", "integer": "integer"}
_ADDABLE = {"string", "long", "integer", "short", "byte", "double", "float", "boolean", "date", "timestamp",
            "timestamp_ntz", "binary"}


def _add_columns(stmt: AddColumns, path: Path, options: DeltaSqlOptions) -> pd.DataFrame:  # noqa: ARG001
    from deltalake import DeltaTable
    from deltalake.schema import Field, PrimitiveType

    table = DeltaTable(str(path))
    existing = {f.name.lower() for f in table.schema().fields}
    fields = []
    for name, type_name in stmt.columns:
        if name.lower() in existing:
            raise SqlError(f"ALTER TABLE {stmt.table.name} ADD COLUMNS: column {name!r} already exists")
        delta_type = _DELTA_TYPES.get(type_name, type_name)
        if delta_type not in _ADDABLE and not re.fullmatch(r"decimal\(\d+,\d+\)", delta_type):
            raise SqlError(f"ALTER TABLE {stmt.table.name} ADD COLUMNS: type {type_name!r} is not supported locally")
        fields.append(Field(name, PrimitiveType(delta_type), nullable=True))
    table.alter.add_columns(fields)
    return pd.DataFrame()


_HANDLERS: dict[type, Callable[[Any, Path, DeltaSqlOptions], pd.DataFrame]] = {
    AddColumns: _add_columns,
    DescribeHistory: _describe_history,
    DescribeDetail: _describe_detail,
    Optimize: _optimize,
    Vacuum: _vacuum,
    Restore: _restore,
    ShowTblProperties: _show_tblproperties,
    SetTblProperties: _set_tblproperties,
    UnsetTblProperties: _unset_tblproperties,
}
