"""The ops notebooks' charts: one status palette, one colour per job, readable axes.

Every chart that colours by a state or status takes its colours from `STATUS_COLORS` (success
green, failure red, whatever the system spells them: Databricks `SUCCESS`/`FAILED`, Airflow
`success`/`failed`, quality `PASSED`/`FAILED`/`WARN`, freshness `FRESH`/`STALE`/`MISSING`), so a
colour means the same in every notebook. Charts that colour by job share one job -> colour mapping
(`job_color_map`). The builders return plotly figures; the notebooks only `.show()` them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd
    from plotly.graph_objects import Figure

__all__ = [
    "FAILURE",
    "STATUS_COLORS",
    "SUCCESS",
    "backfill_rows",
    "batch_durations",
    "cost_by_cluster",
    "cost_by_day",
    "freshness_bar",
    "job_color_map",
    "quality_trend",
    "query_durations",
    "query_labels",
    "stream_rates",
    "status_color_map",
    "timeline",
]

SUCCESS = "#2ca02c"  # green
FAILURE = "#d62728"  # red
_WARNING = "#ff7f0e"  # orange: retried, warned, failed upstream
_ACTIVE = "#1f77b4"  # blue: running or waiting
_NEUTRAL = "#7f7f7f"  # grey: canceled, skipped, missing, unknown

# Keys upper-case; `status_color_map` matches values case-insensitively.
STATUS_COLORS: dict[str, str] = {
    **dict.fromkeys(("SUCCESS", "SUCCEEDED", "PASSED", "FRESH", "OK"), SUCCESS),
    **dict.fromkeys(("FAILED", "FAILURE", "ERROR", "INTERNAL_ERROR", "TIMEDOUT", "TIMED_OUT", "STALE"), FAILURE),
    **dict.fromkeys(("WARN", "WARNING", "UP_FOR_RETRY", "UP_FOR_RESCHEDULE", "UPSTREAM_FAILED", "RETRY"), _WARNING),
    **dict.fromkeys(("RUNNING", "PENDING", "QUEUED", "SCHEDULED", "DEFERRED", "RESTARTING"), _ACTIVE),
    **dict.fromkeys(("CANCELED", "CANCELLED", "SKIPPED", "REMOVED", "MISSING", "NONE", "UNKNOWN"), _NEUTRAL),
}


def status_color_map(values: Iterable[Any]) -> dict[Any, str]:
    """`color_discrete_map` for the given status values, as spelled in the data (unknown ones grey)."""
    return {v: STATUS_COLORS.get(str(v).strip().upper(), _NEUTRAL) for v in dict.fromkeys(values) if v is not None}


def job_color_map(*frames: pd.DataFrame, column: str = "job_name") -> dict[Any, str]:
    """One colour per job over every frame given (sorted names), so a job has one colour in every chart."""
    import plotly.express as px

    names = sorted({str(v) for f in frames if column in f.columns for v in f[column].dropna()})
    palette = px.colors.qualitative.Plotly
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def timeline(frame: pd.DataFrame, *, x_start: str, x_end: str, y: str, color: str = "state", **kwargs: Any) -> Figure:
    """A Gantt timeline of runs, tasks or tries coloured by their state."""
    import plotly.express as px

    return px.timeline(frame, x_start=x_start, x_end=x_end, y=y, color=color,
                       color_discrete_map=status_color_map(frame[color]), **kwargs)


def freshness_bar(report: pd.DataFrame, *, y: str, title: str) -> Figure:
    """Bars per table coloured by freshness status."""
    import plotly.express as px

    return px.bar(report, x="table", y=y, color="status", title=title,
                  color_discrete_map=status_color_map(report["status"]))


def quality_trend(trend: pd.DataFrame, *, table: str) -> Figure:
    """Results of checks not passed per day, coloured by status (a pattern per check)."""
    import plotly.express as px

    return px.bar(trend, x="day", y="results", color="check_status", pattern_shape="check_name",
                  color_discrete_map=status_color_map(trend["check_status"]),
                  hover_data=["check_name"], title=f"Checks not passed per day, {table}")


def cost_by_day(by_day: pd.DataFrame, colors: dict[Any, str]) -> Figure:
    """List cost per day, a colour per job (`colors` from `job_color_map`)."""
    import plotly.express as px

    return px.bar(by_day, x="day", y="list_cost", color="job_name", color_discrete_map=colors,
                  title="List cost per day and job (USD)")


def cost_by_cluster(by_cluster: pd.DataFrame, colors: dict[Any, str], *, top: int = 15) -> Figure:
    """The clusters that cost most, coloured by their job (same colours as `cost_by_day`)."""
    import plotly.express as px

    return px.bar(by_cluster.head(top), x="cluster_id", y="list_cost", color="job_name", color_discrete_map=colors,
                  title="Top clusters by list cost (USD)")


def backfill_rows(before: pd.DataFrame, after: pd.DataFrame, *, title: str) -> Figure:
    """Rows per day before and after, one facet per table, each with its own y scale.

    A small aggregate next to a large fact would be flat on a shared scale.
    """
    import pandas as pd
    import plotly.express as px

    both = pd.concat([before.assign(when="before"), after.assign(when="after")], ignore_index=True)
    tables = max(1, both["table"].nunique()) if len(both) else 1
    spacing = min(0.12, 0.6 / tables)
    half = (1 - spacing * (tables - 1)) / tables / 2  # half a facet's height, in paper coordinates
    fig = px.bar(both, x="day", y="rows", color="when", barmode="group", facet_row="table",
                 facet_row_spacing=spacing, height=160 + 240 * tables, title=title,
                 color_discrete_map={"before": _NEUTRAL, "after": _ACTIVE})
    fig.update_yaxes(matches=None, showticklabels=True, rangemode="tozero")
    fig.update_xaxes(showticklabels=True)
    # Each table's name horizontal above its own facet, not rotated and squeezed at the side.
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1], textangle=0, x=0, xanchor="left",
                                               y=a.y + half, yanchor="bottom"))
    return fig


def query_labels(queries: pd.DataFrame, *, chars: int = 8) -> list[str]:
    """Short x-axis labels for queries: the first `chars` characters of the id, unique."""
    labels: list[str] = []
    for qid in queries["query_id"].astype(str):
        label = qid[:chars]
        while label in labels:
            label += "'"
        labels.append(label)
    return labels


def query_durations(queries: pd.DataFrame, *, top: int = 30) -> Figure:
    """Durations of the recent queries, labelled by short ids (the text on hover)."""
    import plotly.express as px

    q = queries.head(top).copy()
    q["query"] = query_labels(q)
    q["text"] = q["query_text"].fillna("").astype(str).str.slice(0, 80)
    return px.bar(q, x="query", y="duration_ms", hover_data=["query_id", "text"],
                  labels={"query": "query id (first 8 characters)", "duration_ms": "duration (ms)"},
                  title="Recent queries on the table (ms)")


def batch_durations(progress: pd.DataFrame) -> Figure:
    """Batch duration per micro-batch against its mean; the trigger interval drawn only when on the same scale."""
    import plotly.express as px

    p = progress.reset_index(drop=True).assign(batch=lambda f: range(len(f)))
    duration = p["batchDuration"].astype(float)
    trigger = float(p["triggerInterval"].iloc[-1]) if len(p) else 0.0
    longest = float(duration.max()) if len(p) else 0.0
    on_scale = bool(trigger) and trigger <= 3 * max(longest, 1.0)
    note = (f"trigger interval {trigger / 1000:g} s (line)" if on_scale
            else f"trigger interval {trigger / 1000:g} s = {trigger / max(longest, 1.0):,.0f}x the longest batch")
    fig = px.bar(p, x="batch", y="batchDuration", labels={"batchDuration": "batch duration (ms)"},
                 title=f"Batch duration (ms); {note}")
    if len(p):
        fig.add_hline(y=float(duration.mean()), line_dash="dot", annotation_text=f"mean {duration.mean():.0f} ms")
    if on_scale:
        fig.add_hline(y=trigger, line_color=FAILURE, annotation_text="trigger interval")
    return fig


def stream_rates(rates: pd.DataFrame) -> Figure:
    """Rows arriving vs rows processed per second over the same windows (the trigger intervals)."""
    import plotly.express as px

    return px.line(rates, x="batch", y=["arriving_rows_per_s", "processed_rows_per_s"], markers=True,
                   labels={"value": "rows/s", "variable": ""},
                   title="Rows arriving vs rows processed per second, over each trigger interval")
