"""Bronze ingestion: store OLTP tables by `updated_at` watermark, POS landing files by checkpoint.

Bronze is append-only and keeps rows as landed, plus ingestion metadata (`_ingested_at`,
`_source_system`, `_run_id`, `_source_file`). A source column bronze lacks is added to the table
(schema evolution), never dropped. A failure before the write leaves bronze unchanged; the
watermark / checkpoint moves only after the write succeeded, so a retry picks up the same data.

Backfill (`backfill_start_date` / `backfill_end_date`, the runbook's re-ingestion of a date range):
bronze rows of the range are read again from the source and replace what bronze holds for it
(`replaceWhere`). For an OLTP table the range is of `updated_at` (the column ingestion is keyed on),
up to the current watermark (rows past it belong to the next incremental run); the table is then
what the source holds for those days: a version of a row the source has since updated is not in it
any more. For POS it is the landing files of those days (`<landing>/<YYYY-MM-DD>/...`), one commit
per day, recorded in the checkpoint so the stream does not ingest them again. Watermarks do not move.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse import engine
from retail_lakehouse.core.config import Settings, load_settings
from retail_lakehouse.core.errors import ParameterError, SourceError
from retail_lakehouse.core.params import date_range
from retail_lakehouse.core.tables import registry
from retail_lakehouse.engine import writes
from retail_lakehouse.engine.journal import write_monitoring
from retail_lakehouse.engine.watermarks import get_watermark, set_watermark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

OLTP_SYSTEM = "store_oltp"
# The registry's bronze tables of the store OLTP (`source_system: store_oltp`), in registry order:
# `lakehouse onboard` adds one by adding its registry entry.
OLTP_TABLES: tuple[str, ...] = tuple(t.name for t in registry().in_layer("bronze") if t.source_system == OLTP_SYSTEM)
POS_SYSTEM = "pos"
LANDING_SYSTEM = "landing"  # JSON-lines files of an onboarded source (`lakehouse onboard --landing`)
POS_STREAM = "pos_events"
_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@dataclass
class IngestResult:
    """What one ingestion run did (shown by the notebook, recorded in the run's output)."""

    source: str
    table: str
    rows: int
    watermark_from: str | None = None
    watermark_to: str | None = None
    files: int = 0
    batches: int = 0
    added_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    mode: str = "incremental"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- OLTP (JDBC)


def _jdbc_reader(settings: Settings):
    spark = engine.get_spark(settings.env)
    url = settings.oltp_url
    path = settings.sqlite_path(str(settings.local.get("oltp_url", ""))) if settings.is_local else None
    if path is not None and not path.is_file():
        raise SourceError(
            f"source {OLTP_SYSTEM} is unreachable: no SQLite database at {path}. Generate it with "
            "`lakehouse generate`, or fix local.oltp_url in params/local.yaml. Bronze was not changed."
        )
    if settings.is_local:
        from pysail.spark.datasource.jdbc import JdbcDataSource

        spark.dataSource.register(JdbcDataSource)
    return spark, url


def read_oltp(table: str, query: str, settings: Settings) -> DataFrame:
    """Read a query from the store OLTP database through the JDBC source."""
    spark, url = _jdbc_reader(settings)
    reader = spark.read.format("jdbc").option("url", url).option("query", query)
    if not settings.is_local:
        scope = settings.sources.get("oltp_secret_scope")
        if scope:  # credentials come from a secret scope on Databricks, never from parameters
            from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]

            dbutils = DBUtils(spark)
            reader = reader.option("user", dbutils.secrets.get(scope, "user")).option(
                "password", dbutils.secrets.get(scope, "password")
            )
    try:
        df = reader.load()
        df.columns  # noqa: B018 - fail here if the source cannot be reached
    except Exception as exc:
        raise SourceError(
            f"source {OLTP_SYSTEM}.{table} could not be read ({str(exc).splitlines()[0][:300]}). "
            "Check the database is reachable; bronze was not changed and a retry will pick up the same rows."
        ) from None
    return df


def backfill_range(start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date] | None:
    """The backfill range of the dates given, or None for an incremental run.

    Raises:
        ParameterError: only one of the two dates, or the end before the start.
    """
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise ParameterError("backfill_end_date", "give both backfill_start_date and backfill_end_date")
    date_range(start, end, name="backfill_end_date")
    return start, end


def ingest_oltp(
    table: str,
    *,
    run_id: str,
    env: str | None = None,
    backfill_start_date: dt.date | None = None,
    backfill_end_date: dt.date | None = None,
) -> IngestResult:
    """Append the OLTP rows changed since the last watermark to bronze (or re-ingest a date range).

    Raises:
        ParameterError: unknown source table, half a backfill range, or a backfill of a table never
            ingested.
        SourceError: the database is unreachable (bronze unchanged).
    """
    if table not in OLTP_TABLES:
        raise ParameterError("source", f"{table!r} is not an OLTP table; use one of {', '.join(OLTP_TABLES)}")
    backfill = backfill_range(backfill_start_date, backfill_end_date)
    started = time.perf_counter()
    settings = load_settings(env)
    tdef = registry().get(table, layer="bronze")
    previous = get_watermark("bronze", f"{OLTP_SYSTEM}.{table}", env=settings.env)
    if previous is not None and not _TS.match(previous):
        raise SourceError(f"stored watermark {previous!r} for {table} is not a timestamp; fix monitoring.watermarks")
    if backfill is not None:
        return _reingest_oltp(table, tdef, backfill, previous, run_id=run_id, settings=settings, started=started)
    wm = tdef.watermark or "updated_at"
    high = read_oltp(table, f"SELECT MAX({wm}) AS hw FROM {table}", settings).collect()[0][0]
    if high is None or (previous is not None and high <= previous):
        return IngestResult(OLTP_SYSTEM, tdef.full_name(settings), 0, previous, previous, seconds=_since(started))
    where = f"{wm} <= '{high}'" + (f" AND {wm} > '{previous}'" if previous else "")
    rows = read_oltp(table, f"SELECT * FROM {table} WHERE {where}", settings)
    rows = _metadata(rows, f"{OLTP_SYSTEM}.{table}", run_id, OLTP_SYSTEM)
    result = writes.write_table(rows, tdef, mode="append", evolve_schema=True, env=settings.env)
    count = _rows_written(tdef.full_name(settings), run_id, settings)
    set_watermark("bronze", f"{OLTP_SYSTEM}.{table}", high, run_id, env=settings.env)
    return IngestResult(
        OLTP_SYSTEM,
        tdef.full_name(settings),
        count,
        previous,
        high,
        added_columns=list(result.added_columns),
        seconds=_since(started),
    )


def _metadata(rows: DataFrame, source_file: str | None, run_id: str, system: str) -> DataFrame:
    from pyspark.sql import functions as F

    return rows.select(
        *[F.col(c) for c in rows.columns],
        F.current_timestamp().alias("_ingested_at"),
        F.lit(system).alias("_source_system"),
        F.lit(run_id).alias("_run_id"),
        F.lit(source_file).alias("_source_file"),
    )


def _reingest_oltp(
    table: str,
    tdef: Any,
    backfill: tuple[dt.date, dt.date],
    watermark: str | None,
    *,
    run_id: str,
    settings: Settings,
    started: float,
) -> IngestResult:
    """Replace bronze's rows of an `updated_at` range with the source's rows of that range."""
    if watermark is None:
        raise ParameterError(
            "backfill_start_date", f"bronze {table} was never ingested: run the ingestion job without backfill "
            "dates first (there is nothing to re-ingest)"
        )
    start, end = backfill
    low, high = f"{start.isoformat()} 00:00:00", f"{(end + dt.timedelta(days=1)).isoformat()} 00:00:00"
    # The same predicate selects the source rows and the bronze rows they replace. Past the watermark
    # is the next incremental run's: taking it here would land those rows twice.
    wm = tdef.watermark or "updated_at"
    predicate = f"{wm} >= '{low}' AND {wm} < '{high}' AND {wm} <= '{watermark}'"
    rows = read_oltp(table, f"SELECT * FROM {table} WHERE {predicate}", settings)
    rows = _metadata(rows, f"{OLTP_SYSTEM}.{table}", run_id, OLTP_SYSTEM)
    result = writes.write_table(rows, tdef, mode="overwrite", replace_where=predicate, evolve_schema=True,
                                env=settings.env)
    count = _rows_written(tdef.full_name(settings), run_id, settings)
    return IngestResult(
        OLTP_SYSTEM,
        tdef.full_name(settings),
        count,
        low,
        min(high, watermark),
        added_columns=list(result.added_columns),
        seconds=_since(started),
        mode="backfill",
    )


def _rows_written(full: str, run_id: str, settings: Settings) -> int:
    spark = engine.get_spark(settings.env)
    return spark.table(full).filter(f"_run_id = '{run_id}'").count()


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


# ----------------------------------------------------------------------------- POS landing files


@dataclass
class Checkpoint:
    """Files already ingested from the landing folder (the local stand-in for Auto Loader's checkpoint)."""

    path: Path
    files: dict[str, int]
    next_batch_id: int
    stream_id: str

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        if not path.exists():
            return cls(path, {}, 0, str(uuid.uuid5(uuid.NAMESPACE_URL, str(path.parent.name))))
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SourceError(f"checkpoint {path} is corrupt ({exc}); restore it or delete it to re-ingest") from None
        return cls(path, dict(raw["files"]), int(raw["next_batch_id"]), str(raw["stream_id"]))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        payload = {"files": self.files, "next_batch_id": self.next_batch_id, "stream_id": self.stream_id}
        tmp.write_text(json.dumps(payload, indent=0, sort_keys=True))
        os.replace(tmp, self.path)


def _landing_files(landing: Path) -> list[Path]:
    return sorted(p for p in landing.rglob("*.jsonl") if p.is_file())


def read_pos_files(files: list[Path], columns: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Parse JSON-lines files; every line must be a JSON object.

    Returns the records and the columns found that the table lacks (name -> Spark type).

    Raises:
        SourceError: a line is not JSON (names the file and line); nothing is written.
    """
    records: list[dict[str, Any]] = []
    extra: dict[str, str] = {}
    for path in files:
        with path.open("r", encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(
                        f"landing file {path} line {lineno} is not JSON ({exc.msg}); move the file to a "
                        "quarantine folder or fix it, then retry. Bronze was not changed."
                    ) from None
                if not isinstance(record, dict):
                    raise SourceError(f"landing file {path} line {lineno} is not a JSON object; bronze unchanged")
                for key, value in record.items():
                    if key not in columns and key not in extra:
                        extra[key] = _json_type(value)
                record["_source_file"] = str(path)
                records.append(record)
    return records, extra


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    return "string"


def ingest_pos(
    *,
    run_id: str,
    env: str | None = None,
    max_files_per_trigger: int = 50,
    trigger_interval_seconds: int = 60,
    backfill_start_date: dt.date | None = None,
    backfill_end_date: dt.date | None = None,
) -> IngestResult:
    """Ingest new POS landing files into bronze in micro-batches, recording each batch's progress.

    Each micro-batch appends its rows, then records the files in the checkpoint and one row in
    `monitoring.stream_progress` with Spark's StreamingQueryProgress field names. With backfill
    dates the landing files of those days are re-ingested instead (see the module's docstring).

    Raises:
        ParameterError: max_files_per_trigger < 1, or half a backfill range.
        SourceError: a landing file is not JSON (that batch and later ones are not written).
    """
    if max_files_per_trigger < 1:
        raise ParameterError("max_files_per_trigger", "must be at least 1")
    backfill = backfill_range(backfill_start_date, backfill_end_date)
    started = time.perf_counter()
    settings = load_settings(env)
    tdef = registry().get("pos_events", layer="bronze")
    if settings.is_local:
        landing = settings.local_path("landing")
        checkpoint_path = settings.local_path("checkpoints") / POS_STREAM / "files.json"
    else:
        landing = Path(settings.sources["landing"])
        checkpoint_path = Path(settings.sources["checkpoints"]) / POS_STREAM / "files.json"
    if not landing.is_dir():
        raise SourceError(f"landing folder {landing} does not exist; run `lakehouse generate` or fix params")
    checkpoint = Checkpoint.load(checkpoint_path)
    if backfill is not None:
        return _reingest_pos(landing, checkpoint, tdef, backfill, run_id=run_id, settings=settings, started=started)
    pending = [p for p in _landing_files(landing) if str(p.relative_to(landing)) not in checkpoint.files]
    total_rows, batches, added = 0, 0, []
    while pending:
        batch, pending = pending[:max_files_per_trigger], pending[max_files_per_trigger:]
        batch_started = time.perf_counter()
        written, new_cols = _write_pos_batch(batch, tdef, run_id, settings)
        duration = time.perf_counter() - batch_started
        for path in batch:
            checkpoint.files[str(path.relative_to(landing))] = written
        batch_id = checkpoint.next_batch_id
        checkpoint.next_batch_id += 1
        checkpoint.save()
        _record_progress(
            checkpoint, batch_id, run_id, written, duration, trigger_interval_seconds, pending, settings
        )
        total_rows += written
        batches += 1
        added += new_cols
    return IngestResult(
        POS_SYSTEM,
        tdef.full_name(settings),
        total_rows,
        files=sum(1 for _ in checkpoint.files),
        batches=batches,
        added_columns=added,
        seconds=_since(started),
    )


def _landing_day(path: Path, landing: Path) -> dt.date | None:
    """The day a landing file belongs to: its folder `<landing>/<YYYY-MM-DD>/` (None elsewhere)."""
    parts = path.relative_to(landing).parts
    try:
        return dt.date.fromisoformat(parts[0]) if len(parts) > 1 else None
    except ValueError:
        return None


def _reingest_pos(
    landing: Path,
    checkpoint: Checkpoint,
    tdef: Any,
    backfill: tuple[dt.date, dt.date],
    *,
    run_id: str,
    settings: Settings,
    started: float,
) -> IngestResult:
    """Replace bronze's rows from the landing files of each day of the range with those files, read again."""
    start, end = backfill
    by_day: dict[dt.date, list[Path]] = {}
    for path in _landing_files(landing):
        day = _landing_day(path, landing)
        if day is not None and start <= day <= end:
            by_day.setdefault(day, []).append(path)
    total_rows, files, added = 0, 0, []
    for day, batch in sorted(by_day.items()):
        prefix = str(landing / day.isoformat()) + os.sep
        # Exactly the rows that came from this day's folder: its files are all read again below.
        predicate = f"substring(_source_file, 1, {len(prefix)}) = '{_sql_text(prefix)}'"
        written, new_cols = _write_pos_batch(batch, tdef, run_id, settings, replace_where=predicate)
        for path in batch:
            checkpoint.files[str(path.relative_to(landing))] = written
        checkpoint.save()
        total_rows += written
        files += len(batch)
        added += new_cols
    return IngestResult(
        POS_SYSTEM,
        tdef.full_name(settings),
        total_rows,
        start.isoformat(),
        end.isoformat(),
        files=files,
        added_columns=added,
        seconds=_since(started),
        mode="backfill",
    )


def _sql_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _write_pos_batch(
    batch: list[Path], tdef, run_id: str, settings: Settings, *, replace_where: str | None = None,
    system: str = POS_SYSTEM,
) -> tuple[int, list[str]]:
    import pyarrow as pa

    from retail_lakehouse.core.tables import spark_type_to_arrow

    spark = engine.get_spark(settings.env)
    payload_columns = {c: t for c, t in tdef.columns.items() if not c.startswith("_")}
    records, extra = read_pos_files(batch, {**tdef.columns})
    columns = {**payload_columns, **extra}
    arrays = []
    for col, typ in columns.items():
        values = [r.get(col) for r in records]
        arrow_type = spark_type_to_arrow(typ)
        try:
            arrays.append(pa.array(values, type=arrow_type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # A value of another JSON type: keep it as text rather than lose it; silver validates it.
            arrays.append(pa.array([None if v is None else json.dumps(v) for v in values], type=pa.string()))
    arrays.append(pa.array([r["_source_file"] for r in records], type=pa.string()))
    names = [*columns, "_source_file"]
    table = pa.Table.from_arrays(arrays, names=names)
    from pyspark.sql import functions as F

    df = spark.createDataFrame(table) if table.num_rows else spark.createDataFrame([], schema=_ddl(columns))
    df = df.select(
        *[F.col(c) for c in columns],
        F.current_timestamp().alias("_ingested_at"),
        F.lit(system).alias("_source_system"),
        F.lit(run_id).alias("_run_id"),
        F.col("_source_file") if table.num_rows else F.lit(None).cast("string").alias("_source_file"),
    )
    if replace_where:
        result = writes.write_table(df, tdef, mode="overwrite", replace_where=replace_where, evolve_schema=True,
                                    env=settings.env)
    else:
        result = writes.write_table(df, tdef, mode="append", evolve_schema=True, env=settings.env)
    return table.num_rows, list(result.added_columns)


# ----------------------------------------------------------------------------- other landing sources


def landing_dir(source_path: str, settings: Settings) -> Path:
    """The folder of a landing source: absolute as given, or (locally) under LAKEHOUSE_HOME.

    Raises:
        ConfigError: a relative folder on a Databricks environment (give the cloud path).
    """
    path = Path(source_path)
    if path.is_absolute() or "://" in source_path:
        return path
    if not settings.is_local:
        from retail_lakehouse.core.errors import ConfigError

        raise ConfigError(f"landing folder {source_path!r} is relative: in env {settings.env} give its full path")
    return settings.home / path


def ingest_landing(
    table: str,
    *,
    run_id: str,
    env: str | None = None,
    max_files_per_trigger: int = 50,
    backfill_start_date: dt.date | None = None,
    backfill_end_date: dt.date | None = None,
) -> IngestResult:
    """Ingest the new JSON-lines files of an onboarded landing source (`source_system: landing`, its
    folder in `source_path`) into bronze, in batches, each recorded in the source's checkpoint after
    its write. Files are ingested once: a job-wide backfill leaves the source alone (mode `skipped`).

    Raises:
        ParameterError: not a landing source of the registry, or half a backfill range.
        SourceError: no landing folder, or a line that is not a JSON object (that batch is not written).
    """
    started = time.perf_counter()
    settings = load_settings(env)
    tdef = registry().get(table, layer="bronze")
    if tdef.source_system != LANDING_SYSTEM or not tdef.source_path:
        raise ParameterError("table", f"bronze.{table} is not a landing source (source_system: landing, source_path)")
    if backfill_range(backfill_start_date, backfill_end_date) is not None:
        return IngestResult(LANDING_SYSTEM, tdef.full_name(settings), 0, mode="skipped", seconds=_since(started))
    landing = landing_dir(tdef.source_path, settings)
    if not landing.is_dir():
        raise SourceError(f"landing folder {landing} of {table} does not exist; bronze was not changed")
    root = settings.local_path("checkpoints") if settings.is_local else Path(settings.sources["checkpoints"])
    checkpoint = Checkpoint.load(root / table / "files.json")
    pending = [p for p in _landing_files(landing) if str(p.relative_to(landing)) not in checkpoint.files]
    total, batches, added = 0, 0, []
    while pending:
        batch, pending = pending[:max_files_per_trigger], pending[max_files_per_trigger:]
        written, new_cols = _write_pos_batch(batch, tdef, run_id, settings, system=LANDING_SYSTEM)
        for path in batch:
            checkpoint.files[str(path.relative_to(landing))] = written
        checkpoint.next_batch_id += 1
        checkpoint.save()
        total, batches, added = total + written, batches + 1, added + new_cols
    return IngestResult(LANDING_SYSTEM, tdef.full_name(settings), total, files=len(checkpoint.files),
                        batches=batches, added_columns=added, seconds=_since(started))


def _ddl(columns: dict[str, str]) -> str:
    return ", ".join(f"`{c}` {t}" for c, t in {**columns, "_source_file": "string"}.items())


def _record_progress(
    checkpoint: Checkpoint,
    batch_id: int,
    run_id: str,
    rows: int,
    duration: float,
    trigger_interval_seconds: int,
    pending: list[Path],
    settings: Settings,
) -> None:
    import datetime as dt

    behind_bytes = sum(p.stat().st_size for p in pending)
    behind_rows = sum(_count_lines(p) for p in pending)
    rate = rows / duration if duration > 0 else 0.0
    row = {
        "id": checkpoint.stream_id,
        "runId": run_id,
        "name": POS_STREAM,
        "timestamp": dt.datetime.now(dt.UTC),
        "batchId": batch_id,
        "numInputRows": rows,
        "inputRowsPerSecond": rows / max(trigger_interval_seconds, 1),
        "processedRowsPerSecond": rate,
        "batchDuration": int(duration * 1000),
        "triggerInterval": int(trigger_interval_seconds * 1000),
        "numFilesOutstanding": len(pending),
        "numBytesOutstanding": behind_bytes,
        "numRowsBehind": behind_rows,
        "sources": json.dumps([{"description": f"FileStreamSource[{POS_STREAM}]", "numInputRows": rows}]),
    }
    tdef = registry().get("stream_progress", layer="monitoring")
    write_monitoring(tdef.ref, [tuple(row[c] for c in tdef.columns)], tdef.ddl(), env=settings.env)


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
