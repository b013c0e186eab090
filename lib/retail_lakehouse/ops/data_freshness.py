"""Data freshness: every table's last update against its SLA (`ops/freshness_sla.yaml`).

Two clocks are judged. The last commit time (`DESCRIBE HISTORY`) against `max_hours_since_commit`
catches a pipeline that stopped writing. The newest business date in the data against the reference
business date (the `as_of` parameter, else the newest business date any table reached) catches a
source that stopped sending: the pipeline still commits, but the data stands still.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import yaml

from retail_lakehouse.core.errors import ConfigError, TableNotFoundError
from retail_lakehouse.core.params import Parameters
from retail_lakehouse.core.tables import registry
from retail_lakehouse.ops import _delta
from retail_lakehouse.ops._delta import TableRef
from retail_lakehouse.ops._outcome import Outcome

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.ops.summary import Summary

COLUMNS = [
    "table", "full_name", "last_commit", "hours_since_commit", "max_hours_since_commit", "business_date",
    "business_lag_days", "max_business_lag_days", "status", "reason",
]
# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(as_of="optional_date")


@dataclass(frozen=True)
class Sla:
    """A table's freshness SLA."""

    table: str
    max_hours_since_commit: float
    business_date: str | None = None
    max_business_lag_days: int = 1


@cache
def slas() -> tuple[Sla, ...]:
    """The declared SLAs, checked against the registry (every problem reported at once).

    Raises:
        ConfigError: unknown tables or malformed values in freshness_sla.yaml.
    """
    raw = yaml.safe_load(resources.files("retail_lakehouse").joinpath("ops/freshness_sla.yaml").read_text()) or {}
    defaults = raw.get("defaults") or {}
    out, problems = [], []
    for name, spec in (raw.get("tables") or {}).items():
        spec = {**defaults, **(spec or {})}
        try:
            registry().get(str(name))
        except TableNotFoundError as exc:
            problems.append(f"{name}: {exc}")
            continue
        try:
            out.append(
                Sla(
                    table=str(name),
                    max_hours_since_commit=float(spec["max_hours_since_commit"]),
                    business_date=spec.get("business_date"),
                    max_business_lag_days=int(spec.get("max_business_lag_days", 1)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{name}: {exc!r}")
    if problems:
        raise ConfigError("ops/freshness_sla.yaml has problems:\n  " + "\n  ".join(problems))
    return tuple(out)


def observe(w: WorkspaceClient, env: str, sla_list: tuple[Sla, ...] | None = None) -> pd.DataFrame:
    """Per table: last commit time and newest business date (missing tables have NaT/None).

    One `DESCRIBE HISTORY ... LIMIT 1` per table (concurrently; a table that does not exist fails it)
    and one statement for every business date at once.
    """
    refs = [(sla, TableRef.of(registry().get(sla.table), env)) for sla in sla_list or slas()]
    histories = _delta.sql_each(w, [f"DESCRIBE HISTORY {ref.full} LIMIT 1" for _, ref in refs], env=env)
    rows: list[dict[str, Any]] = []
    for (sla, ref), hist in zip(refs, histories, strict=True):
        row: dict[str, Any] = {"table": sla.table, "full_name": ref.full, "last_commit": pd.NaT, "business_date": None}
        if isinstance(hist, pd.DataFrame) and len(hist):
            row["last_commit"] = pd.Timestamp(hist["timestamp"].iloc[0])
        rows.append(row)
    dated = [(i, sla, ref) for i, (sla, ref) in enumerate(refs) if sla.business_date and pd.notna(rows[i]["last_commit"])]
    if dated:
        union = " UNION ALL ".join(
            f"SELECT {i} AS i, CAST(max({sla.business_date}) AS DATE) AS d FROM {ref.full}" for i, sla, ref in dated
        )
        frame = _delta.sql(w, union, env=env)
        for i, value in zip(frame["i"], frame["d"], strict=True):
            rows[int(i)]["business_date"] = None if pd.isna(value) else pd.Timestamp(value).date()
    return pd.DataFrame(rows, columns=["table", "full_name", "last_commit", "business_date"])


def judge(
    observed: pd.DataFrame,
    *,
    now: dt.datetime,
    as_of: dt.date | None = None,
    sla_list: tuple[Sla, ...] | None = None,
) -> pd.DataFrame:
    """Judge observations against the SLAs (pure).

    Args:
        observed: output of `observe` (table, full_name, last_commit, business_date).
        now: the wall clock (UTC) for the commit-age check.
        as_of: the business date the data should have reached; default the newest business date of
            any table.
        sla_list: SLAs (default: the declared ones).

    Returns:
        One row per table with COLUMNS; `status` is FRESH, STALE or MISSING, `reason` says why.
    """
    by_table = {s.table: s for s in sla_list or slas()}
    dates = [d for d in observed["business_date"] if d is not None and not pd.isna(d)]
    reference = as_of or (max(dates) if dates else None)
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    out = []
    for _, row in observed.iterrows():
        sla = by_table[row["table"]]
        last = row["last_commit"]
        result = {
            "table": row["table"],
            "full_name": row["full_name"],
            "last_commit": last,
            "hours_since_commit": None,
            "max_hours_since_commit": sla.max_hours_since_commit,
            "business_date": row["business_date"],
            "business_lag_days": None,
            "max_business_lag_days": sla.max_business_lag_days if sla.business_date else None,
        }
        reasons = []
        if pd.isna(last):
            result.update(status="MISSING", reason="the table does not exist")
            out.append(result)
            continue
        hours = (now_ts - pd.Timestamp(last)).total_seconds() / 3600
        result["hours_since_commit"] = round(hours, 2)
        if hours > sla.max_hours_since_commit:
            reasons.append(f"last written {hours:.1f} h ago (SLA {sla.max_hours_since_commit:g} h)")
        if sla.business_date and reference is not None:
            bdate = row["business_date"]
            if bdate is None or pd.isna(bdate):
                reasons.append("no business date in the data")
            else:
                lag = (reference - bdate).days
                result["business_lag_days"] = lag
                if lag > sla.max_business_lag_days:
                    reasons.append(
                        f"newest business date {bdate} is {lag} days behind {reference} "
                        f"(SLA {sla.max_business_lag_days} days): its source has not sent newer data"
                    )
        result.update(status="STALE" if reasons else "FRESH", reason="; ".join(reasons) or "within SLA")
        out.append(result)
    return pd.DataFrame(out, columns=COLUMNS)


def check(w: WorkspaceClient, env: str, *, as_of: dt.date | None = None, now: dt.datetime | None = None) -> pd.DataFrame:
    """Observe and judge every table with an SLA."""
    observed = observe(w, env)
    return judge(observed, now=now or dt.datetime.now(dt.UTC), as_of=as_of)


def stale(report: pd.DataFrame) -> list[str]:
    """Tables not FRESH."""
    return sorted(report.loc[report["status"] != "FRESH", "table"])


@dataclass
class FreshnessOutcome(Outcome):
    """The freshness of every table with an SLA; with `fail_on_stale`, a stale table fails the run.

    Attributes:
        report: per table, its commit and business-date lag, status and reason (see `judge`).
        fail_on_stale: `raise_for_status()` raises when a table is not fresh (for scheduled checks).
    """

    procedure: ClassVar[str] = "data_freshness"
    report: pd.DataFrame
    fail_on_stale: bool = False

    @property
    def stale_tables(self) -> list[str]:
        """Tables not FRESH."""
        return stale(self.report)

    @property
    def held(self) -> bool:  # type: ignore[override]
        return not (self.stale_tables and self.fail_on_stale)

    @property
    def message(self) -> str:  # type: ignore[override]
        return f"stale tables: {self.stale_tables}"

    def verdict(self) -> list[str]:
        """The notebook's verification: the tables that miss their SLA and why, or that all meet it."""
        if not self.stale_tables:
            return [f"FRESH: all {len(self.report)} tables meet their SLA"]
        lines = [f"STALE: {len(self.stale_tables)} table(s) miss their SLA:"]
        not_fresh = self.report[self.report.status != "FRESH"]
        lines += [f"  {row.table}: {row.status}: {row.reason}" for row in not_fresh.itertuples()]
        return lines


def run(w: WorkspaceClient, env: str, *, as_of: dt.date | None = None, fail_on_stale: bool = False) -> FreshnessOutcome:
    """Check every table's freshness (read-only); the outcome raises for stale tables only with `fail_on_stale`.
    A stale or missing table alerts `freshness:<table>`; a fresh one resolves its alert."""
    from retail_lakehouse.ops import incident_alerts

    outcome = FreshnessOutcome(check(w, env, as_of=as_of), fail_on_stale)
    incident_alerts.freshness(outcome.report, env=env)
    return outcome


def summary_of(outcome: FreshnessOutcome, *, env: str) -> Summary:
    """The notebook's summary (its last cell): which tables miss their SLA, by how much, what to run."""
    from retail_lakehouse.ops.summary import Summary, command

    report = outcome.report
    stale_rows = report[report["status"] != "FRESH"]
    if stale_rows.empty:
        return Summary("data_freshness", "NOTHING TO DO", "is the data fresh?",
                       f"All {len(report)} tables meet their freshness SLA.",
                       f"{len(report)} tables FRESH", "Nothing to do.", "Check only; nothing changed.")
    first = stale_rows.iloc[0]
    evidence = "; ".join(f"{r.table} {r.status}: {r.reason}" for r in stale_rows.itertuples())
    if "source" in str(first["reason"]):  # nothing to rebuild: the data never arrived
        step = (f"# the source of {first['table']} has not sent newer data: check the source system (the POS "
                "landing zone, the store database) and its delivery; once it has, check again:\n"
                + command("data_freshness", env=env, ops_run_id="<OPS_RUN_ID>"))
    else:
        step = (f"# the data arrived but {first['table']} was not rebuilt: rebuild the missing days (dry run first):\n"
                + command("backfill", env=env, ops_run_id="<OPS_RUN_ID>", table=first["table"],
                          start_date="<FIRST_MISSING_DATE>", end_date="<LAST_MISSING_DATE>"))
    return Summary("data_freshness", "DIAGNOSED", "dashboards miss recent data",
                   f"{len(stale_rows)} of {len(report)} table(s) miss their SLA, first {first['table']}: {first['reason']}",
                   evidence, step,
                   "Check only; nothing changed." + (" The run fails (fail_on_stale)." if outcome.failed else ""))
