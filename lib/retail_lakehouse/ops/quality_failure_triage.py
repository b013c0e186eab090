"""Quality failure triage: which checks failed for a table and day, since when, on which rows, from which run.

Reads `<env>_monitoring.quality_metrics` (failed and warned checks, their trend over the last days),
`silver.<table>_quarantine` (sample rejected rows and the rules they broke), and
`monitoring.reconciliation` / `monitoring.job_runs` (the upstream transformation run that produced
those rows). A rerun of the quality job (`retail_data_quality_checks`) is an action: off by default,
confirmed in qa/prod, and verified by reading the new results.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.core.tables import TableDef, full_name, registry

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.summary import Summary

__all__ = ["ACTIONS", "PARAMETERS", "QUALITY_JOB", "QualityTriage", "failing_rules", "rerun", "summarize_checks", "triage"]

QUALITY_JOB = "retail_data_quality_checks"
ACTIONS = ("none", "rerun")
# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(table="table", date="optional_date", action=Param("choice", choices=ACTIONS))




def _sql(w: WorkspaceClient, statement: str, params: dict[str, Any] | None, env: str) -> pd.DataFrame:
    """run_sql, with a missing table answered as an empty frame (a fresh lakehouse has none yet)."""
    import pandas as pd

    from retail_lakehouse.core.errors import TableNotFoundError
    from retail_lakehouse.databricks.statements import run_sql

    try:
        return run_sql(w, statement, params, env=env)
    except TableNotFoundError:  # no metrics recorded yet
        return pd.DataFrame()


def summarize_checks(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per check of the day: its latest status, metric and threshold, and how many runs failed (pure)."""
    import pandas as pd

    cols = ["check_name", "check_type", "criticality", "check_status", "metric_value", "threshold", "failed_runs",
            "details"]
    if metrics.empty:
        return pd.DataFrame(columns=cols)
    m = metrics.sort_values("check_timestamp")
    latest = m.groupby("check_name", as_index=False).last()
    fails = m[m["check_status"] != "PASSED"].groupby("check_name").size().rename("failed_runs")
    out = latest.merge(fails, how="left", left_on="check_name", right_index=True)
    out["failed_runs"] = out["failed_runs"].fillna(0).astype(int)
    order = {"ERROR": 0, "FAILED": 0, "WARN": 1, "PASSED": 2}
    out = out.sort_values(["check_status", "check_name"], key=lambda s: s.map(order) if s.name == "check_status" else s)
    return out[cols].reset_index(drop=True)


def failing_rules(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Rows per failed rule in quarantined rows (`_failed_rules` is a comma-separated list; pure)."""
    import pandas as pd

    if quarantine.empty or "_failed_rules" not in quarantine:
        return pd.DataFrame(columns=["rule", "rows"])
    rules = quarantine["_failed_rules"].dropna().astype(str).str.strip("[]").str.replace('"', "").str.split(",")
    exploded = rules.explode().str.strip()
    counts = exploded[exploded != ""].value_counts()
    return pd.DataFrame({"rule": counts.index, "rows": counts.to_numpy()})


@dataclass
class QualityTriage:
    """What the triage found.

    Attributes:
        table: the silver/gold table (full name).
        day: the day judged.
        checks: per check of that day (see `summarize_checks`).
        failed: the checks not PASSED.
        trend: FAILED/WARN counts per day and check over the window.
        quarantine_sample: sample quarantined rows of the upstream run.
        quarantine_by_rule: rows per failed rule.
        upstream: the upstream run (reconciliation and job_runs rows).
        diagnosis: one plain sentence.
    """

    table: str
    day: dt.date | None
    checks: pd.DataFrame
    failed: pd.DataFrame
    trend: pd.DataFrame
    quarantine_sample: pd.DataFrame
    quarantine_by_rule: pd.DataFrame
    upstream: pd.DataFrame
    diagnosis: str
    upstream_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_checks(self) -> list[str]:
        return [str(c) for c in self.failed["check_name"]] if len(self.failed) else []


def triage(w: WorkspaceClient, table: TableDef, day: dt.date | None, *, env: str, window_days: int = 14,
           sample_rows: int = 20) -> QualityTriage:
    """Triage the quality results of a table for a day (default: the latest day with results).

    Args:
        w: workspace client.
        table: registry table (silver or gold: the tables with checks).
        day: the day the checks ran (check_timestamp date); None for the latest.
        env: environment.
        window_days: days of trend before the day.
        sample_rows: quarantined rows to show.
    """
    import pandas as pd

    settings = load_settings(env)
    full = table.full_name(settings)
    metrics_table = full_name("monitoring.quality_metrics", env)
    if day is None:
        last = _sql(w, f"SELECT MAX(check_timestamp) AS last FROM {metrics_table} WHERE table_name = :t", {"t": full}, env)
        value = last["last"].iloc[0] if len(last) else None
        day = None if value is None or pd.isna(value) else pd.Timestamp(value).date()
    if day is None:
        empty = pd.DataFrame()
        return QualityTriage(full, None, summarize_checks(empty), empty, empty, empty, empty, empty,
                             f"No quality results for {full} yet: run {QUALITY_JOB} first.")
    window_start = day - dt.timedelta(days=window_days)
    metrics = _sql(
        w,
        f"SELECT * FROM {metrics_table} WHERE table_name = :t AND CAST(check_timestamp AS DATE) = :d",
        {"t": full, "d": day},
        env,
    )
    checks = summarize_checks(metrics)
    failed = checks[checks["check_status"] != "PASSED"].reset_index(drop=True)
    trend = _sql(
        w,
        f"SELECT CAST(check_timestamp AS DATE) AS day, check_name, check_status, COUNT(*) AS results "
        f"FROM {metrics_table} WHERE table_name = :t AND CAST(check_timestamp AS DATE) BETWEEN :s AND :d "
        "AND check_status <> 'PASSED' GROUP BY 1, 2, 3 ORDER BY 1, 2",
        {"t": full, "s": window_start, "d": day},
        env,
    )
    # Upstream: the latest transformation run of the table at or before the day's last check.
    recon = _sql(
        w,
        f"SELECT * FROM {full_name('monitoring.reconciliation', env)} WHERE table_name = :t "
        "AND CAST(processed_at AS DATE) <= :d ORDER BY processed_at DESC LIMIT 5",
        {"t": full, "d": day},
        env,
    )
    upstream_run = None
    if len(recon):
        with_rejects = recon[recon["quarantined_rows"].fillna(0) > 0]
        upstream_run = str((with_rejects if len(with_rejects) else recon)["run_id"].iloc[0])
    upstream = recon
    if upstream_run:
        runs = _sql(
            w,
            f"SELECT run_id, job_name, task_key, attempt, state, start_time, end_time, error_class "
            f"FROM {full_name('monitoring.job_runs', env)} WHERE run_id = :r ORDER BY start_time",
            {"r": upstream_run},
            env,
        )
        if len(runs):
            upstream = runs
    sample = pd.DataFrame()
    if table.layer == "silver":
        try:
            qdef = registry().get(f"{table.name}_quarantine", layer="silver")
        except Exception:  # noqa: BLE001 - a table without quarantine
            qdef = None
        if qdef is not None:
            where = "WHERE _quarantine_run_id = :r" if upstream_run else ""
            sample = _sql(
                w,
                f"SELECT * FROM {qdef.full_name(settings)} {where} ORDER BY _quarantined_at DESC LIMIT {int(sample_rows)}",
                {"r": upstream_run} if upstream_run else None,
                env,
            )
    by_rule = failing_rules(sample)
    if len(failed):
        worst = failed.iloc[0]
        rules = ", ".join(f"{r.rule} ({r.rows})" for r in by_rule.head(3).itertuples()) or "none"
        diagnosis = (
            f"{full} on {day}: {len(failed)} check(s) not passed ({', '.join(failed['check_name'])}); worst "
            f"{worst['check_name']} {worst['check_status']} (metric {worst['metric_value']}, threshold "
            f"{worst['threshold']}). Upstream run {upstream_run or 'unknown'} quarantined rows; sample rows "
            f"broke: {rules}."
        )
    else:
        diagnosis = f"{full} on {day}: every check passed ({len(checks)} checks)."
    return QualityTriage(full, day, checks, failed, trend, sample, by_rule, upstream, diagnosis, upstream_run)


@dataclass
class RerunOutcome:
    """What a rerun of the quality job did."""

    run_id: int | None
    result_state: str | None
    table_checks: pd.DataFrame
    held: bool
    message: str


def rerun(w: WorkspaceClient, table: TableDef, *, env: str, dry_run: bool, business_date: dt.date | None = None,
          timeout: float = 900) -> RerunOutcome:
    """Rerun the quality job and read the table's new results.

    `held` is True when the table's checks of the new run all passed.
    """
    import pandas as pd

    from retail_lakehouse.databricks.workspace import run_job

    if dry_run:
        return RerunOutcome(None, None, pd.DataFrame(), False,
                            f"Dry run: would run {QUALITY_JOB} (business_date {business_date or 'latest'}).")
    params = {"business_date": business_date.isoformat()} if business_date else None
    run = run_job(w, QUALITY_JOB, params, timeout=timeout, progress=False)
    result = run.state.result_state.value if run.state and run.state.result_state else None
    full = table.full_name(load_settings(env))
    latest = _sql(
        w,
        f"SELECT * FROM {full_name('monitoring.quality_metrics', env)} WHERE table_name = :t "
        f"AND check_timestamp >= (SELECT MAX(check_timestamp) - INTERVAL 10 MINUTES FROM "
        f"{full_name('monitoring.quality_metrics', env)} WHERE table_name = :t)",
        {"t": full},
        env,
    )
    if len(latest):
        last_run = latest.sort_values("check_timestamp")["run_id"].iloc[-1]
        latest = latest[latest["run_id"] == last_run]
    checks = summarize_checks(latest)
    bad = checks[checks["check_status"] == "FAILED"]
    held = len(checks) > 0 and bad.empty
    message = (
        f"{QUALITY_JOB} run {run.run_id} ended {result}; {full}: "
        + (f"every check passed ({len(checks)})." if held else
           f"{len(bad)} check(s) still FAILED: {', '.join(bad['check_name'])}. Fix the data or the rule first.")
    )
    return RerunOutcome(run.run_id, result, checks, held, message)


def summary_of(q: QualityTriage, outcome: RerunOutcome | None, params: Any) -> Summary:
    """The notebook's summary (its last cell): the failed checks, their cause, and the rerun's outcome."""
    from retail_lakehouse.ops.summary import Summary, as_parameters, command

    env = params["env"]
    failed = list(q.failed["check_name"]) if len(q.failed) else []
    evidence = "; ".join(f"{c.check_name} {c.check_status} (metric {c.metric_value}, threshold {c.threshold})"
                         for c in q.failed.itertuples()) or "every check passed"
    rerun = {**as_parameters(params), "action": "rerun"}
    if outcome is not None and not getattr(outcome, "dry_run", False) and outcome.run_id is not None:
        status = "HELD" if outcome.held else "DID NOT HOLD"
        nxt = (command("data_freshness", env=env) if outcome.held
               else "# fix the source rows (see the quarantine sample above), then:\n" + command(
                   "quality_failure_triage", env=env, **rerun))
        result = outcome.message
    elif not failed:
        status, nxt, result = "NOTHING TO DO", "Nothing to do.", "Triage only; nothing changed."
    else:
        status = "DIAGNOSED" if outcome is None else "DRY RUN"
        nxt = ("# once the cause is fixed upstream, rerun the checks:\n"
               + command("quality_failure_triage", env=env, **rerun, dry_run=False,
                         **({"confirm": True} if env in ("qa", "prod") else {})))
        result = outcome.message if outcome is not None else "Triage only; nothing changed."
    return Summary("quality_failure_triage", status,
                   f"quality checks failed on {q.table}" + (f" for {q.day}" if q.day else ""),
                   q.diagnosis, evidence, nxt, result)
