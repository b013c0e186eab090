"""Cost review: DBUs and list cost by job, cluster and SKU, the trend, and where money can be saved.

Usage comes from `system.billing.usage` joined with `system.billing.list_prices` (the local workspace
serves both from the local run history); cluster settings from the jobs and clusters APIs; storage
from `DESCRIBE DETAIL` and `VACUUM ... DRY RUN` of every registered table. Recommendations carry an
estimated monthly saving and the assumption behind it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.params import Parameters, date_range
from retail_lakehouse.core.tables import registry

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.summary import Summary

__all__ = [
    "ASSUMPTIONS",
    "PARAMETERS",
    "CostReview",
    "cluster_findings",
    "extra_runs",
    "period",
    "recommend",
    "review",
    "storage",
    "summarize",
    "usage",
]

# Assumptions behind the savings estimates (shown in the notebook next to each figure).
ASSUMPTIONS = {
    "vm_cost_per_dbu_cost": 1.0,  # cloud VM bill of a classic cluster ~ its DBU bill (i3/r5 on AWS)
    "spot_discount": 0.6,  # spot workers cost ~60% less than on-demand VMs
    "idle_share_without_autotermination": 0.3,  # an all-purpose cluster without auto-termination idles ~30%
    "storage_usd_per_gb_month": 0.023,  # S3 standard
    "expected_runs_per_day": 1,  # the runbook's jobs run once a day (the daily chain)
}
PERIOD_DAYS = 30  # the default period, ending today (UTC)


def period(start: dt.date | None, end: dt.date | None, *, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The period to review: `end` defaults to today (UTC), `start` to 29 days before `end`.

    Raises:
        ParameterError: the end is before the start.
    """
    end = end or today or dt.datetime.now(dt.UTC).date()
    start = start or end - dt.timedelta(days=PERIOD_DAYS - 1)
    date_range(start, end)
    return start, end


def _check_period(values: dict[str, Any]) -> dict[str, Any]:
    start, end = period(values["start_date"], values["end_date"])
    return {"start_date": start, "end_date": end}


# The notebook's parameters beyond their annotations (see core.params): an empty date is filled in
# (see `period`), and the audit row records the period reviewed.
PARAMETERS = Parameters(start_date="optional_date", end_date="optional_date", check=_check_period)

USAGE_SQL = """
SELECT
  u.usage_date,
  u.usage_metadata.job_id AS job_id,
  u.usage_metadata.job_name AS job_name,
  u.usage_metadata.job_run_id AS job_run_id,
  u.usage_metadata.cluster_id AS cluster_id,
  u.usage_metadata.node_type AS node_type,
  u.sku_name,
  u.usage_start_time,
  u.usage_end_time,
  CAST(u.usage_quantity AS DOUBLE) AS dbus,
  CAST(u.usage_quantity * p.pricing.default AS DOUBLE) AS list_cost,
  p.currency_code
FROM system.billing.usage u
JOIN system.billing.list_prices p
  ON u.sku_name = p.sku_name
 AND u.cloud = p.cloud
 AND u.usage_unit = p.usage_unit
 AND u.usage_end_time >= p.price_start_time
 AND (p.price_end_time IS NULL OR u.usage_end_time < p.price_end_time)
WHERE u.usage_date BETWEEN :start_date AND :end_date
ORDER BY u.usage_start_time
"""


def usage(w: WorkspaceClient, start: dt.date, end: dt.date, *, env: str) -> pd.DataFrame:
    """Usage records of the period with DBUs and list cost (one row per record)."""
    from retail_lakehouse.databricks.statements import run_sql

    frame = run_sql(w, USAGE_SQL, {"start_date": start, "end_date": end}, env=env)
    if len(frame):
        frame["job_name"] = frame["job_name"].fillna(frame["job_id"].fillna("(no job)").astype(str))
        frame["cluster_id"] = frame["cluster_id"].fillna("(serverless)")
    return frame


def summarize(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """DBUs and cost by job, cluster, SKU and day (pure)."""
    import pandas as pd

    if records.empty:
        empty = pd.DataFrame(columns=["dbus", "list_cost"])
        return {"by_job": empty, "by_cluster": empty, "by_sku": empty, "by_day": empty}

    def by(keys: list[str]) -> pd.DataFrame:
        out = records.groupby(keys, dropna=False).agg(
            dbus=("dbus", "sum"), list_cost=("list_cost", "sum"), runs=("job_run_id", "nunique")
        )
        return out.sort_values("list_cost", ascending=False).reset_index()

    by_day = records.assign(day=pd.to_datetime(records["usage_date"]).dt.date).groupby(["day", "job_name"]).agg(
        dbus=("dbus", "sum"), list_cost=("list_cost", "sum")).reset_index()
    return {
        "by_job": by(["job_name"]),
        "by_cluster": by(["cluster_id", "job_name", "node_type"]),
        "by_sku": by(["sku_name"]),
        "by_day": by_day,
    }


def extra_runs(records: pd.DataFrame, *, expected_per_day: int = 1) -> pd.DataFrame:
    """Per job and day, runs beyond the expected number and what they cost (pure)."""
    import pandas as pd

    cols = ["job_name", "day", "runs", "extra_runs", "extra_cost"]
    if records.empty:
        return pd.DataFrame(columns=cols)
    per_run = records.assign(day=pd.to_datetime(records["usage_date"]).dt.date).groupby(
        ["job_name", "day", "job_run_id"]).agg(cost=("list_cost", "sum")).reset_index()
    rows = []
    for (job, day), g in per_run.groupby(["job_name", "day"]):
        n = len(g)
        if n > expected_per_day:
            extra = n - expected_per_day
            # The cheapest runs are the extra ones we can be surest about: do not overstate.
            rows.append({"job_name": job, "day": day, "runs": n, "extra_runs": extra,
                         "extra_cost": float(g["cost"].sort_values().head(extra).sum())})
    return pd.DataFrame(rows, columns=cols).sort_values("extra_cost", ascending=False, ignore_index=True)


def cluster_findings(w: WorkspaceClient) -> pd.DataFrame:
    """Job clusters and all-purpose clusters without spot workers or auto-termination (jobs + clusters APIs)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for job in w.jobs.list(expand_tasks=True):
        settings = job.settings
        if settings is None:
            continue
        for jc in settings.job_clusters or []:
            spec = jc.new_cluster
            if spec is None:
                continue
            aws = spec.aws_attributes
            availability = aws.availability.value if aws and aws.availability else None
            azure = spec.azure_attributes
            if availability is None and azure and azure.availability:
                availability = azure.availability.value
            spot = bool(availability and "SPOT" in availability)
            rows.append({
                "kind": "job cluster",
                "job_name": settings.name,
                "cluster": jc.job_cluster_key,
                "node_type": spec.node_type_id,
                "workers": spec.num_workers if spec.autoscale is None else
                f"{spec.autoscale.min_workers}-{spec.autoscale.max_workers}",
                "availability": availability or "ON_DEMAND (not set)",
                "spot": spot,
                # A job cluster ends with its run: auto-termination does not apply.
                "auto_termination": "n/a (job cluster)",
                "problem": None if spot else "no spot workers",
            })
    for c in w.clusters.list():
        source = c.cluster_source.value if c.cluster_source else None
        if source == "JOB":
            continue
        auto = c.autotermination_minutes or 0
        rows.append({
            "kind": "all-purpose cluster",
            "job_name": None,
            "cluster": c.cluster_name or c.cluster_id,
            "node_type": c.node_type_id,
            "workers": c.num_workers,
            "availability": c.aws_attributes.availability.value if c.aws_attributes and c.aws_attributes.availability else None,
            "spot": None,
            "auto_termination": auto,
            "problem": "no auto-termination" if auto == 0 else None,
        })
    # The problem first after the cluster's name: the decisive column stays in view on a narrow page.
    return pd.DataFrame(rows, columns=["kind", "job_name", "cluster", "problem", "node_type", "workers", "availability",
                                       "spot", "auto_termination"])


def storage(w: WorkspaceClient, *, env: str) -> pd.DataFrame:
    """Size of every registered table and the files VACUUM would delete (DRY RUN, default retention).

    VACUUM DRY RUN lists paths only; reclaimable bytes are estimated as files x the table's average file size.
    """
    import pandas as pd

    from retail_lakehouse.ops import _delta

    settings = load_settings(env)
    tables = [(t, t.full_name(settings)) for t in registry()]
    # Independent statements, run concurrently (see _delta.sql_each); results in registry order.
    details = _delta.sql_each(w, [f"DESCRIBE DETAIL {full}" for _, full in tables], env=env)
    present = [(t, full, d.iloc[0]) for (t, full), d in zip(tables, details, strict=True) if not isinstance(d, Exception)]
    vacuums = _delta.sql_each(w, [f"VACUUM {full} DRY RUN" for _, full, _ in present], env=env)
    rows = []
    for (t, full, d), vac in zip(present, vacuums, strict=True):
        size, files = int(d["sizeInBytes"] or 0), int(d["numFiles"] or 0)
        vacuum_files = 0 if isinstance(vac, Exception) else len(vac)
        avg = size / files if files else 0
        rows.append({"table": full, "layer": t.layer, "size_mb": round(size / 1e6, 3), "files": files,
                     "vacuum_files": vacuum_files, "vacuum_reclaim_mb_est": round(vacuum_files * avg / 1e6, 3)})
    return pd.DataFrame(rows, columns=["table", "layer", "size_mb", "files", "vacuum_files", "vacuum_reclaim_mb_est"]
                        ).sort_values("size_mb", ascending=False, ignore_index=True)


def recommend(
    *,
    by_cluster: pd.DataFrame,
    extra: pd.DataFrame,
    clusters: pd.DataFrame,
    storage_frame: pd.DataFrame,
    period_days: int,
) -> pd.DataFrame:
    """Recommendations with estimated monthly savings (pure); ranked by saving."""
    import pandas as pd

    a = ASSUMPTIONS
    month = 30 / max(1, period_days)
    recs: list[tuple[float, str, str]] = []
    if len(extra):
        total = float(extra["extra_cost"].sum())
        jobs = extra.groupby("job_name")["extra_runs"].sum().sort_values(ascending=False)
        top = ", ".join(f"{j} (+{n} runs)" for j, n in jobs.head(3).items())
        recs.append((total * month,
                     f"Stop the extra runs: {top}. Check who triggers them (manual runs, a retry loop, a second schedule).",
                     f"{int(extra['extra_runs'].sum())} runs beyond {a['expected_runs_per_day']}/day cost "
                     f"${total:.4f} in {period_days} days"))
    no_spot = clusters[(clusters["kind"] == "job cluster") & (~clusters["spot"].astype(bool))] if len(clusters) else clusters
    if len(no_spot) and len(by_cluster):
        names = set(no_spot["job_name"])
        cost = float(by_cluster[by_cluster["job_name"].isin(names)]["list_cost"].sum())
        saving = cost * a["vm_cost_per_dbu_cost"] * a["spot_discount"] * month
        recs.append((saving,
                     f"Use spot workers (availability SPOT_WITH_FALLBACK, first_on_demand 1) for {', '.join(sorted(map(str, names)))}.",
                     f"{len(no_spot)} job cluster(s) on demand; their DBU cost ${cost:.4f} in the period; assumes VM "
                     f"cost = {a['vm_cost_per_dbu_cost']:g} x DBU cost and a {a['spot_discount']:.0%} spot discount"))
    no_auto = clusters[clusters["problem"] == "no auto-termination"] if len(clusters) else clusters
    for _, c in no_auto.iterrows():
        cost = float(by_cluster[by_cluster["cluster_id"] == c["cluster"]]["list_cost"].sum()) if len(by_cluster) else 0.0
        recs.append((cost * a["idle_share_without_autotermination"] * month,
                     f"Set autotermination_minutes 30 on cluster {c['cluster']}.",
                     f"auto-termination is off; assumes {a['idle_share_without_autotermination']:.0%} idle time"))
    if len(storage_frame):
        reclaim = float(storage_frame["vacuum_reclaim_mb_est"].sum())
        if reclaim > 0:
            worst = storage_frame.sort_values("vacuum_reclaim_mb_est", ascending=False).head(3)
            recs.append((reclaim / 1000 * a["storage_usd_per_gb_month"],
                         f"VACUUM {', '.join(worst['table'])} (retention 168 h, the optimize notebook).",
                         f"VACUUM DRY RUN lists {int(storage_frame['vacuum_files'].sum())} files, about {reclaim:.2f} MB, "
                         f"at ${a['storage_usd_per_gb_month']}/GB-month"))
    if len(by_cluster):
        # The job's spend over all its clusters: the same figure and share as the diagnosis's top spender.
        per_job = by_cluster.groupby("job_name")["list_cost"].sum().sort_values(ascending=False)
        job, cost = per_job.index[0], float(per_job.iloc[0])
        total = float(by_cluster["list_cost"].sum())
        node = by_cluster.loc[by_cluster["job_name"] == job, "node_type"].iloc[0]
        recs.append((0.0, f"Top spender: {job} on {node} - check its cluster against the "
                          "sizing table (diagnose_slow_query) before anything else.",
                     f"${cost:.4f} of ${total:.4f} in the period ({cost / total if total else 0:.0%})"))
    recs.sort(key=lambda r: -r[0])
    return pd.DataFrame(
        [{"rank": i + 1, "recommendation": r, "est_monthly_saving_usd": round(s, 4), "evidence": e}
         for i, (s, r, e) in enumerate(recs)],
        columns=["rank", "recommendation", "est_monthly_saving_usd", "evidence"],
    )


@dataclass
class CostReview:
    """The review of one period."""

    start: dt.date
    end: dt.date
    records: pd.DataFrame
    by_job: pd.DataFrame
    by_cluster: pd.DataFrame
    by_sku: pd.DataFrame
    by_day: pd.DataFrame
    extra: pd.DataFrame
    clusters: pd.DataFrame
    storage: pd.DataFrame
    recommendations: pd.DataFrame
    diagnosis: str
    extra_info: dict[str, Any] = field(default_factory=dict)
    previous: pd.DataFrame | None = None  # usage of the previous period of the same length

    @property
    def previous_cost(self) -> float:
        return float(self.previous["list_cost"].sum()) if self.previous is not None and len(self.previous) else 0.0

    def comparison(self) -> pd.DataFrame:
        """List cost per job: this period, the previous period of the same length, and the change."""
        import pandas as pd

        def per_job(records: pd.DataFrame | None) -> pd.Series:
            if records is None or records.empty:
                return pd.Series(dtype=float)
            return records.groupby("job_name")["list_cost"].sum()

        now, before = per_job(self.records), per_job(self.previous)
        out = pd.DataFrame({"this_period_usd": now, "previous_period_usd": before}).fillna(0.0)
        out["change_usd"] = out["this_period_usd"] - out["previous_period_usd"]
        out = out.round(4).sort_values("change_usd", ascending=False).rename_axis("job_name").reset_index()
        return out

    @property
    def total_cost(self) -> float:
        return float(self.records["list_cost"].sum()) if len(self.records) else 0.0

    @property
    def total_dbus(self) -> float:
        return float(self.records["dbus"].sum()) if len(self.records) else 0.0


def review(w: WorkspaceClient, start: dt.date, end: dt.date, *, env: str, include_storage: bool = True) -> CostReview:
    """Review cost for a period (inclusive dates)."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cost-storage") as pool:
        # The storage review (two statements per table) is independent of usage and clusters: overlap them.
        sizing = pool.submit(storage, w, env=env) if include_storage else None
        records = usage(w, start, end, env=env)
        span = end - start + dt.timedelta(days=1)
        previous = usage(w, start - span, start - dt.timedelta(days=1), env=env)  # week over week, month over month
        parts = summarize(records)
        extra = extra_runs(records, expected_per_day=int(ASSUMPTIONS["expected_runs_per_day"]))
        clusters = cluster_findings(w)
        store = sizing.result() if sizing is not None else pd.DataFrame()
    days = (end - start).days + 1
    recs = recommend(by_cluster=parts["by_cluster"], extra=extra, clusters=clusters, storage_frame=store,
                     period_days=days)
    total = float(records["list_cost"].sum()) if len(records) else 0.0
    if records.empty:
        diagnosis = f"No usage recorded between {start} and {end}: nothing ran in the period."
    else:
        top = parts["by_job"].iloc[0]
        diagnosis = (f"{start}..{end}: {float(records['dbus'].sum()):.4f} DBUs, ${total:.4f} list cost over "
                     f"{records['job_run_id'].nunique()} runs; top spender {top['job_name']} "
                     f"(${float(top['list_cost']):.4f}, {float(top['list_cost']) / total:.0%}).")
        if len(extra):
            diagnosis += (f" {int(extra['extra_runs'].sum())} run(s) beyond the daily schedule, led by "
                          f"{extra.groupby('job_name')['extra_cost'].sum().idxmax()}.")
    before = float(previous["list_cost"].sum()) if len(previous) else 0.0
    change = f"{(total - before) / before:+.0%}" if before else "no usage then"
    diagnosis += (f" Previous {days} days ({start - span}..{start - dt.timedelta(days=1)}): ${before:.4f} "
                  f"({change}).")
    result = CostReview(start, end, records, parts["by_job"], parts["by_cluster"], parts["by_sku"], parts["by_day"],
                        extra, clusters, store, recs, diagnosis, previous=previous)
    from retail_lakehouse.ops import incident_alerts

    incident_alerts.cost(result, env=env)  # over the env's budget (alerts.budgets): alert cost:<period>
    return result


def summary_of(r: CostReview, *, env: str) -> Summary:
    """The notebook's summary (its last cell): the spend against the previous period, the top saving."""
    from retail_lakehouse.ops.summary import Summary, command

    days = (r.end - r.start).days + 1
    before = r.previous_cost
    change = f"{(r.total_cost - before) / before:+.0%}" if before else "no usage in the previous period"
    cmp = r.comparison()
    mover = cmp.iloc[0] if len(cmp) else None
    evidence = (f"${r.total_cost:.4f} in {r.start}..{r.end} vs ${before:.4f} in the previous {days} days ({change})"
                + (f"; biggest change {mover['job_name']} {mover['change_usd']:+.4f} USD" if mover is not None else ""))
    first = r.recommendations.iloc[0] if len(r.recommendations) else None
    step = (f"# {first['recommendation']} (about ${first['est_monthly_saving_usd']:.4f} a month)\n"
            if first is not None else "")
    step += "# then review the next period against this one:\n" + command(
        "cost_review", env=env, ops_run_id="<OPS_RUN_ID>", start_date="<START_DATE>", end_date="<END_DATE>")
    return Summary("cost_review", "DIAGNOSED", f"the bill for {r.start}..{r.end} ({days} days)", r.diagnosis,
                   evidence, step, "Review only; nothing changed.")
