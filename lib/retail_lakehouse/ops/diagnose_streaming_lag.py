"""Diagnose a stream falling behind, from its micro-batch progress rows.

Progress rows (`<env>_monitoring.stream_progress`, Spark StreamingQueryProgress field names) give,
per micro-batch, input and processing rates, batch duration and trigger interval, and the backlog
(files, bytes and rows outstanding). A stream lags when the backlog grows batch after batch: either
each batch is capped too low (`maxFilesPerTrigger` / `maxOffsetsPerTrigger`) while files arrive
faster, or batches take longer than the trigger interval (the cluster is too small). The checkpoint
is healthy when batch ids increase by one within a run and the stream id stays the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.ops import cluster_sizing

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.summary import Summary

__all__ = [
    "CATCH_UP_TRIGGERS",
    "MAX_FILES_PER_TRIGGER_CAP",
    "PARAMETERS",
    "LagDiagnosis",
    "analyze",
    "checkpoint_health",
    "diagnose",
    "load_progress",
    "max_files_to_catch_up",
    "rates",
    "recommend",
]

# The rule for maxFilesPerTrigger (the troubleshooting chapter states it with these numbers): enough
# files per trigger to take what arrives per trigger plus the peak backlog spread over CATCH_UP_TRIGGERS
# triggers; at least one more than today, at most Auto Loader's default (cloudFiles.maxFilesPerTrigger).
CATCH_UP_TRIGGERS = 3
MAX_FILES_PER_TRIGGER_CAP = 1000

# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(
    stream="identifier",
    max_files_per_trigger=Param("int", minimum=0, maximum=100000),
    last_runs=Param("int", minimum=1, maximum=100),
)

PROGRESS_COLUMNS = [
    "id", "runId", "name", "timestamp", "batchId", "numInputRows", "inputRowsPerSecond", "processedRowsPerSecond",
    "batchDuration", "triggerInterval", "numFilesOutstanding", "numBytesOutstanding", "numRowsBehind", "sources",
]


def load_progress(w: WorkspaceClient, stream: str, *, env: str, limit: int = 500) -> pd.DataFrame:
    """The stream's latest progress rows (oldest first); empty when the table has none yet."""
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.core.errors import TableNotFoundError
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.databricks.statements import run_sql

    full = registry().get("stream_progress", layer="monitoring").full_name(load_settings(env))
    try:
        frame = run_sql(
            w,
            f"SELECT * FROM {full} WHERE name = :name ORDER BY timestamp DESC, batchId DESC LIMIT {int(limit)}",
            {"name": stream},
            env=env,
        )
    except TableNotFoundError:  # no stream has reported progress yet
        import pandas as pd

        return pd.DataFrame(columns=PROGRESS_COLUMNS)
    return frame.sort_values(["timestamp", "batchId"], ignore_index=True)


def _slope(values: list[float]) -> float:
    """Least-squares slope per batch (0 for fewer than two points)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den if den else 0.0


def checkpoint_health(progress: pd.DataFrame) -> dict[str, Any]:
    """Whether the checkpoint looks healthy: one stream id, batch ids increasing by one, no repeats."""
    if progress.empty:
        return {"healthy": None, "detail": "no progress rows"}
    ids = sorted(int(b) for b in progress["batchId"])
    gaps = [b for a, b in zip(ids, ids[1:], strict=False) if b - a > 1]
    repeats = len(ids) - len(set(ids))
    stream_ids = progress["id"].dropna().unique().tolist()
    problems = []
    if len(stream_ids) > 1:
        problems.append(f"{len(stream_ids)} stream ids: the checkpoint was reset or replaced")
    if repeats:
        problems.append(f"{repeats} batch id(s) recorded twice: batches were replayed")
    if gaps:
        problems.append(f"batch ids skip at {gaps[:5]}")
    return {
        "healthy": not problems,
        "detail": "; ".join(problems) or f"batch ids {ids[0]}..{ids[-1]} contiguous, one stream id",
        "last_batch_id": ids[-1],
    }


def analyze(progress: pd.DataFrame) -> dict[str, Any]:
    """Pure analysis of progress rows (oldest first): rates, durations, backlog and its trend.

    Returns:
        A dict of measures; `lagging` is True when the backlog grows or the stream cannot keep up.
    """
    if progress.empty:
        return {"batches": 0, "lagging": False}
    p = progress
    files = [float(x) for x in p["numFilesOutstanding"].fillna(0)]
    rows_behind = [float(x) for x in p["numRowsBehind"].fillna(0)]
    duration = p["batchDuration"].astype(float)
    trigger = p["triggerInterval"].astype(float)
    input_rate = float(p["inputRowsPerSecond"].astype(float).mean())
    processed_rate = float(p["processedRowsPerSecond"].astype(float).mean())
    files_per_batch = float(p["numInputRows"].astype(float).mean())
    last = p.iloc[-1]
    over = int((duration > trigger).sum())
    # Backlog left after the first batch of each run: growing from run to run means arrivals outpace the stream.
    starts = [float(g["numFilesOutstanding"].iloc[0] or 0) for _, g in p.groupby("runId", sort=False)]
    peak = max(files) if files else 0.0
    return {
        "batches": len(p),
        "input_rows_per_s": round(input_rate, 2),
        "processed_rows_per_s": round(processed_rate, 2),
        "mean_batch_ms": round(float(duration.mean()), 1),
        "trigger_interval_ms": int(trigger.iloc[-1]),
        "batches_over_trigger": over,
        "files_outstanding_first": int(files[0]),
        "files_outstanding_peak": int(peak),
        "files_outstanding_last": int(files[-1]),
        "files_trend_per_batch": round(_slope(files), 2),
        "backlog_at_run_start": [int(x) for x in starts],
        "backlog_trend_per_run": round(_slope(starts), 2),
        "rows_behind_last": int(rows_behind[-1]),
        "rows_behind_peak": int(max(rows_behind)),
        "bytes_outstanding_last": int(last["numBytesOutstanding"] or 0),
        "mean_rows_per_batch": round(files_per_batch, 1),
        # Minutes behind: the rows behind over the pace the stream takes them (rows per trigger interval).
        "minutes_behind_last": _minutes(rows_behind[-1], files_per_batch, float(trigger.iloc[-1])),
        "minutes_behind_peak": _minutes(max(rows_behind), files_per_batch, float(trigger.iloc[-1])),
        # Lag: a backlog at its peak of several batches' worth, or batches slower than the trigger.
        "lagging": bool(peak >= 3 or over > len(p) / 2 or (len(starts) > 1 and _slope(starts) > 0 and peak > 0)),
    }


def _minutes(rows_behind: float, rows_per_batch: float, trigger_ms: float) -> float | None:
    """Minutes the stream needs, at its pace (rows per trigger interval), to take `rows_behind` rows."""
    if rows_per_batch <= 0 or trigger_ms <= 0:
        return None
    return round(rows_behind / rows_per_batch * trigger_ms / 60000, 1)


def rates(progress: pd.DataFrame) -> pd.DataFrame:
    """Rows arriving and rows processed per second of each batch, over the same window (pure).

    The window is the batch's trigger interval: a batch processed `numInputRows` rows in it, and
    `numInputRows` plus the growth of the rows behind (`numRowsBehind`, counted after the batch) arrived
    in it. The first batch of each run has no previous count to grow from, so only its processed rate
    is known. A lagging stream shows arrivals above processing, as the verdict says.
    """
    import pandas as pd

    p = progress.reset_index(drop=True)
    window_s = (p["triggerInterval"].astype(float) / 1000).clip(lower=1.0)
    taken = p["numInputRows"].astype(float).fillna(0)
    behind = p["numRowsBehind"].astype(float).fillna(0)
    grown = behind - behind.groupby(p["runId"], sort=False).shift(1)
    return pd.DataFrame({
        "batch": range(len(p)),
        "runId": p["runId"],
        "arriving_rows_per_s": ((taken + grown) / window_s).clip(lower=0).round(3),
        "processed_rows_per_s": (taken / window_s).round(3),
    })


def max_files_to_catch_up(current: int, peak_backlog: int, growth_per_batch: float = 0.0) -> int:
    """maxFilesPerTrigger that drains a backlog of `peak_backlog` files within CATCH_UP_TRIGGERS triggers.

    A capped stream takes `current` files per trigger while about `current + growth_per_batch` arrive;
    the new cap takes those arrivals plus the peak backlog spread over CATCH_UP_TRIGGERS triggers,
    bounded by `current + 1` below and MAX_FILES_PER_TRIGGER_CAP above.

    Args:
        current: today's maxFilesPerTrigger (files a batch takes at most).
        peak_backlog: files outstanding at the peak.
        growth_per_batch: how much the backlog grew per batch (negative counts as 0).
    """
    arriving = current + max(0.0, growth_per_batch)
    wanted = math.ceil(arriving + peak_backlog / CATCH_UP_TRIGGERS)
    return max(current + 1, min(MAX_FILES_PER_TRIGGER_CAP, wanted))


def recommend(measures: dict[str, Any], *, max_files_per_trigger: int | None) -> pd.DataFrame:
    """Ranked recommendations with their evidence (pure; sized from the measures)."""
    import pandas as pd

    rows: list[tuple[str, str]] = []
    if measures.get("batches", 0) == 0:
        return pd.DataFrame(columns=["rank", "recommendation", "evidence"])
    peak = measures["files_outstanding_peak"]
    batches = measures["batches"]
    trigger_s = measures["trigger_interval_ms"] / 1000
    over = measures["batches_over_trigger"]
    if measures["lagging"] and peak > 0 and over <= batches / 2:
        # Capacity is there (batches finish within the trigger): let each batch take more files.
        current = max_files_per_trigger or 1
        wanted = max_files_to_catch_up(current, peak, measures.get("files_trend_per_batch", 0.0))
        rows.append(
            (f"Raise maxFilesPerTrigger from {current} to {wanted} (maxOffsetsPerTrigger likewise for Kafka) so "
             f"micro-batches drain the backlog within {CATCH_UP_TRIGGERS} triggers.",
             f"rule: {current} files taken per trigger + growth {max(0.0, measures.get('files_trend_per_batch', 0.0)):g}"
             f" + peak {peak} / {CATCH_UP_TRIGGERS} triggers, capped at {MAX_FILES_PER_TRIGGER_CAP}; "
             f"backlog peaked at {peak} files; backlog at run start {measures['backlog_at_run_start']} "
             f"(trend {measures['backlog_trend_per_run']:+} files/run) while "
             f"{batches - over}/{batches} batches finished within the {trigger_s:g}s trigger")
        )
    if over > batches / 2:
        size = cluster_sizing.size_named("medium") or cluster_sizing.sizes()[-1]
        rows.append(
            (f"Batches are slower than the trigger: give the stream more cores ({size.describe()}), or lengthen the "
             f"trigger interval to at least {math.ceil(measures['mean_batch_ms'] / 1000 * 1.2)}s.",
             f"{over}/{batches} batches took longer than the {trigger_s:g}s trigger "
             f"(mean {measures['mean_batch_ms']:.0f} ms)")
        )
    if measures["lagging"] and measures["processed_rows_per_s"] and measures["input_rows_per_s"] > measures["processed_rows_per_s"]:
        rows.append(
            ("Processing rate is below the input rate: scale the stream's cluster up one size.",
             f"input {measures['input_rows_per_s']} rows/s vs processed {measures['processed_rows_per_s']} rows/s")
        )
    if not measures["lagging"]:
        rows.append(("No change: the stream keeps up.",
                     f"backlog {measures['files_outstanding_last']} files at the last batch, peak {peak}; "
                     f"{over}/{batches} batches over the trigger"))
    return pd.DataFrame([{"rank": i + 1, "recommendation": r, "evidence": e} for i, (r, e) in enumerate(rows)],
                        columns=["rank", "recommendation", "evidence"])


@dataclass
class LagDiagnosis:
    """The diagnosis of one stream.

    Attributes:
        stream: the stream's name.
        progress: its progress rows, oldest first.
        measures: see `analyze`.
        checkpoint: see `checkpoint_health`.
        cause: backlog_growing (batch cap too low), slow_batches (cluster too small), none, or no_data.
        recommendations: ranked, with evidence.
        diagnosis: one plain sentence.
    """

    stream: str
    progress: pd.DataFrame
    measures: dict[str, Any]
    checkpoint: dict[str, Any]
    cause: str
    recommendations: pd.DataFrame
    diagnosis: str


def _max_files(progress: pd.DataFrame) -> int | None:
    """maxFilesPerTrigger as the largest number of files any batch took (a lower bound of the setting).

    From the sources' `numInputFiles` when recorded, else from the drop of the backlog between
    consecutive batches of one run.
    """
    import json

    best = 0
    for _, g in progress.groupby("runId", sort=False):
        values = [int(x or 0) for x in g.sort_values("batchId")["numFilesOutstanding"]]
        drops = [a - b for a, b in zip(values, values[1:], strict=False) if a > b]
        best = max([best, *drops])
    for raw in progress.get("sources", []):
        try:
            for s in json.loads(raw) if isinstance(raw, str) else raw or []:
                best = max(best, int(s.get("numInputFiles") or 0))
        except (ValueError, TypeError, AttributeError):
            continue
    return best or None


def diagnose(
    w: WorkspaceClient, stream: str, *, env: str, max_files_per_trigger: int | None = None, last_runs: int = 3
) -> LagDiagnosis:
    """Diagnose a stream from its progress rows.

    Args:
        w: workspace client.
        stream: the stream's name (`name` in stream_progress), e.g. ``pos_events``.
        env: environment.
        max_files_per_trigger: the stream's current setting, when known (else inferred).
        last_runs: analyze the batches of the latest N runs of the stream.

    Returns:
        The diagnosis (cause `no_data` and a plain sentence when there are no progress rows).
    """
    import pandas as pd

    progress = load_progress(w, stream, env=env)
    if progress.empty:
        return LagDiagnosis(stream, progress, {"batches": 0, "lagging": False}, checkpoint_health(progress), "no_data",
                            pd.DataFrame(columns=["rank", "recommendation", "evidence"]),
                            f"Stream {stream!r} has no progress rows yet: nothing to diagnose (has it run?).")
    runs = progress.groupby("runId", sort=False)["timestamp"].max().sort_values().index.tolist()
    recent = progress[progress["runId"].isin(runs[-max(1, last_runs):])].reset_index(drop=True)
    measures = analyze(recent)
    checkpoint = checkpoint_health(progress)
    if max_files_per_trigger is None:
        max_files_per_trigger = _max_files(recent)
    recs = recommend(measures, max_files_per_trigger=max_files_per_trigger)
    if not measures["lagging"]:
        cause = "none"
        diagnosis = (f"Stream {stream!r} keeps up: backlog {measures['files_outstanding_last']} files at the last of "
                     f"{measures['batches']} batches (peak {measures['files_outstanding_peak']}).")
    elif measures["batches_over_trigger"] > measures["batches"] / 2:
        cause = "slow_batches"
        diagnosis = (f"Stream {stream!r} is lagging: batches take longer than the trigger interval "
                     f"({measures['batches_over_trigger']}/{measures['batches']}), so the cluster is too small.")
    else:
        cause = "backlog_growing"
        diagnosis = (f"Stream {stream!r} is lagging: the backlog reached {measures['files_outstanding_peak']} files "
                     f"({measures['rows_behind_peak']} rows, about {measures.get('minutes_behind_peak')} minutes behind) because each micro-batch takes too few files "
                     "(max files per trigger too low) while batches finish well within the trigger.")
    if checkpoint.get("healthy") is False:
        diagnosis += f" Checkpoint: {checkpoint['detail']}."
    from retail_lakehouse.ops import incident_alerts

    result = LagDiagnosis(stream, recent, measures, checkpoint, cause, recs, diagnosis)
    incident_alerts.stream_lag(result, env=env)  # lagging: alert stream_lag:<stream>; keeping up: resolve
    return result


def summary_of(d: LagDiagnosis, *, env: str) -> Summary:
    """The notebook's summary (its last cell): how far behind the stream is, in minutes, and the fix."""
    from retail_lakehouse.ops.summary import Summary, command

    m = d.measures
    if d.cause == "no_data":
        return Summary("diagnose_streaming_lag", "NOTHING TO DO", f"stream {d.stream} reported lagging", d.diagnosis,
                       "no progress rows", "Start the stream (retail_streaming) and run this again.",
                       "Diagnosis only; nothing changed.")
    first = d.recommendations.iloc[0] if len(d.recommendations) else None
    behind = m.get("minutes_behind_peak")
    symptom = f"stream {d.stream} behind" + (f" by about {behind:g} minutes at its peak" if behind is not None else "")
    evidence = (f"backlog peak {m.get('files_outstanding_peak')} files / {m.get('rows_behind_peak')} rows, last "
                f"{m.get('files_outstanding_last')} files; {m.get('batches_over_trigger')}/{m.get('batches')} batches "
                f"over the {m.get('trigger_interval_ms', 0) / 1000:g} s trigger; minutes behind: peak {behind}, "
                f"last {m.get('minutes_behind_last')}")
    step = f"# {first['recommendation']}" if first is not None else "Nothing to do."
    if d.cause == "backlog_growing":
        step += ("\n# (retail_streaming's parameters in databricks.yml), redeploy; after its next run check the lag drains:\n"
                 + command("diagnose_streaming_lag", env=env, ops_run_id="<OPS_RUN_ID>", stream=d.stream))
    return Summary("diagnose_streaming_lag", "DIAGNOSED" if d.cause != "none" else "NOTHING TO DO", symptom,
                   d.diagnosis, evidence, step, "Diagnosis only; nothing changed.")
