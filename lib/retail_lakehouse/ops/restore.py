"""Restore a table to an earlier Delta version (the runbook's answer to a bad write).

Plan: read the history, resolve the target (`"12"`, `"latest-1"` or a timestamp), compare the target
with the current version (row counts and sample rows only in one of them), and name the tables built
from it that need reprocessing (`_delta.lineage`, from the rule sets and gold builds). Apply: `RESTORE TABLE ... TO VERSION AS OF n`,
then verify the table holds exactly the target's rows. Nothing here imports the engine: every call
goes through the workspace, so the same code restores in dev/qa/prod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from retail_lakehouse.core.errors import LakehouseError, ParameterError
from retail_lakehouse.core.params import Parameters
from retail_lakehouse.ops import _delta
from retail_lakehouse.ops._delta import TableRef
from retail_lakehouse.ops._outcome import Outcome
from retail_lakehouse.ops.safety import require_confirmation

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from retail_lakehouse.core.tables import TableDef
    from retail_lakehouse.ops.audit import AuditRecord
    from retail_lakehouse.ops.summary import Summary

_LATEST = re.compile(r"^latest\s*-\s*(\d+)$", re.IGNORECASE)
SAMPLE_ROWS = 5
# The notebook's parameters beyond their annotations (see core.params); `version` is text, resolved by `plan`.
PARAMETERS = Parameters(table="table")


@dataclass
class RestorePlan:
    """What a restore would do.

    Attributes:
        ref: the table.
        current_version: its version now.
        target_version: the version to restore.
        current_rows: rows now.
        target_rows: rows at the target version.
        history: `DESCRIBE HISTORY` (newest first).
        only_in_current: sample rows the restore removes.
        only_in_target: sample rows the restore brings back.
        downstream: tables built from this one that need reprocessing.
    """

    ref: TableRef
    current_version: int
    target_version: int
    current_rows: int
    target_rows: int
    history: pd.DataFrame
    only_in_current: pd.DataFrame
    only_in_target: pd.DataFrame
    downstream: list[str] = field(default_factory=list)

    @property
    def statement(self) -> str:
        return f"RESTORE TABLE {self.ref.full} TO VERSION AS OF {self.target_version}"

    def comparison(self) -> pd.DataFrame:
        """Row counts of the two versions, for display."""
        return pd.DataFrame(
            {
                "version": [self.current_version, self.target_version],
                "which": ["current", "target"],
                "rows": [self.current_rows, self.target_rows],
            }
        )


@dataclass
class RestoreOutcome(Outcome):
    """What the restore did and whether it held (`raise_for_status()` raises when it did not)."""

    procedure: ClassVar[str] = "restore"
    run_id_field: ClassVar[str] = "reprocess_run_id"
    dry_run: bool
    statement: str
    version_before: int
    version_after: int
    rows_after: int
    held: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    reprocess_run_id: int | None = None
    message: str = ""


def resolve_version(history: pd.DataFrame, version: str) -> int:
    """The target version named by `version`, checked against the history.

    Args:
        history: `DESCRIBE HISTORY` frame (columns `version`, `timestamp`).
        version: a version number (``"12"``), ``"latest-N"`` (N versions before the current one) or a
            timestamp (``"2024-01-31 12:00:00"``, UTC unless it has an offset: the last version
            committed at or before it).

    Raises:
        ParameterError: malformed, or no such version in the history (the message lists the range).
    """
    if history.empty:
        raise ParameterError("version", "the table has no history; nothing to restore")
    versions = sorted(int(v) for v in history["version"])
    lo, hi = versions[0], versions[-1]
    text = str(version).strip()
    target: int | None = None
    if m := _LATEST.match(text):
        target = hi - int(m.group(1))
    elif text.lower() == "latest":
        target = hi
    elif re.fullmatch(r"\d+", text):
        target = int(text)
    else:
        try:
            ts = pd.Timestamp(text)
        except ValueError:
            raise ParameterError(
                "version", f"{version!r} is not a version (12), latest-N or a timestamp (2024-01-31 12:00:00)"
            ) from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        stamps = pd.to_datetime(history["timestamp"], utc=True)
        eligible = history.loc[stamps <= ts, "version"]
        if eligible.empty:
            raise ParameterError(
                "version", f"{ts} is before the table's first available commit ({stamps.min()}); pick a later time"
            )
        target = int(eligible.max())
    if target not in versions:
        raise ParameterError(
            "version", f"version {target} does not exist; versions {lo}..{hi} exist (see the history above)"
        )
    return target


def _diff_sample(w: WorkspaceClient, ref: TableRef, left: int | None, right: int | None) -> pd.DataFrame:
    def side(v: int | None) -> str:
        return f"SELECT * FROM {ref.full}" + (f" VERSION AS OF {v}" if v is not None else "")

    return _delta.sql(w, f"{side(left)} EXCEPT {side(right)} LIMIT {SAMPLE_ROWS}", env=ref.env)


def plan(w: WorkspaceClient, tdef: TableDef, version: str, *, env: str) -> RestorePlan:
    """Compare the target version with the current one, without changing anything.

    Raises:
        ParameterError: the version does not exist or the table does not.
    """
    ref = TableRef.of(tdef, env)
    if not _delta.exists(w, ref):
        raise ParameterError("table", f"{ref.full} does not exist; a lost table is rebuilt with rebuild_from_source")
    hist = _delta.history(w, ref)
    target = resolve_version(hist, version)
    current = int(hist["version"].max())
    return RestorePlan(
        ref=ref,
        current_version=current,
        target_version=target,
        current_rows=_delta.count(w, ref),
        target_rows=_delta.count(w, ref, at_version=target),
        history=hist,
        only_in_current=_diff_sample(w, ref, None, target),
        only_in_target=_diff_sample(w, ref, target, None),
        downstream=_delta.downstream(tdef.ref),
    )


def apply(
    w: WorkspaceClient,
    p: RestorePlan,
    *,
    dry_run: bool,
    confirm: bool,
    record: AuditRecord | None = None,
    reprocess_downstream: bool = False,
) -> RestoreOutcome:
    """Restore the table (unless dry run), verify it, and optionally reprocess downstream tables.

    Raises:
        ConfirmationRequired: qa/prod without confirm (nothing changed).
    """
    require_confirmation(p.ref.env, dry_run=dry_run, confirm=confirm, action=f"RESTORE of {p.ref.full}")
    if dry_run:
        return RestoreOutcome(True, p.statement, p.current_version, p.current_version, p.current_rows,
                              held=True, message=f"dry run: would run `{p.statement}`; nothing changed")
    if p.target_version == p.current_version:
        return RestoreOutcome(False, p.statement, p.current_version, p.current_version, p.current_rows,
                              held=True, message="the table is already at the target version; nothing to do")
    metrics = _delta.sql(w, p.statement, env=p.ref.env)
    after = _delta.version(w, p.ref)
    if record is not None:
        record.changed(p.ref.full, p.current_version, after)
    outcome = verify(w, p, after)
    outcome.metrics = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.iloc[0].items()} \
        if not metrics.empty else {}
    if reprocess_downstream and p.downstream:
        outcome.reprocess_run_id = reprocess(w, p)
    return outcome


def verify(w: WorkspaceClient, p: RestorePlan, version_after: int) -> RestoreOutcome:
    """Check the table now holds exactly the target version's rows."""
    rows = _delta.count(w, p.ref)
    extra = len(_diff_sample(w, p.ref, None, p.target_version))
    missing = len(_diff_sample(w, p.ref, p.target_version, None))
    held = rows == p.target_rows and extra == 0 and missing == 0
    msg = (
        f"restored {p.ref.full} to version {p.target_version} (new version {version_after}): {rows} rows, "
        f"equal to the target's" if held else
        f"RESTORE did not hold: {rows} rows vs {p.target_rows} expected; {extra} unexpected, {missing} missing rows"
    )
    return RestoreOutcome(False, p.statement, p.current_version, version_after, rows, held=held, message=msg)


def reprocess(w: WorkspaceClient, p: RestorePlan) -> int | None:
    """Run the job that rebuilds the downstream tables; returns its run id.

    Gold/silver tables with a business date are reprocessed for their whole date range (backfill
    parameters); the job's other tables are rebuilt incrementally as on any run.

    Raises:
        LakehouseError: the job run failed (the message names the run).
    """
    from retail_lakehouse.databricks.workspace import run_job

    params: dict[str, Any] = {}
    date_col = {"fact_sales": "date_key", "agg_daily_sales": "date_key"}.get(p.ref.tdef.name)
    if date_col:
        frame = _delta.sql(w, f"SELECT min({date_col}) AS lo, max({date_col}) AS hi FROM {p.ref.full}", env=p.ref.env)
        lo, hi = frame["lo"].iloc[0], frame["hi"].iloc[0]
        if pd.notna(lo):
            params = {"backfill_start_date": _key_to_iso(int(lo)), "backfill_end_date": _key_to_iso(int(hi))}
    run = run_job(w, "retail_transformation", params, progress=False)
    result = run.state.result_state.value if run.state and run.state.result_state else None
    if result != "SUCCESS":
        raise LakehouseError(f"reprocessing run {run.run_id} of retail_transformation ended {result}")
    return run.run_id


def _key_to_iso(key: int) -> str:
    text = str(key)
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


def summary_of(outcome: RestoreOutcome, p: RestorePlan, params: Any) -> Summary:
    """The notebook's summary (its last cell): the bad version, the restore's effect, what to reprocess."""
    from retail_lakehouse.ops.summary import as_parameters, command, of_change

    env = p.ref.env
    exact = {**as_parameters(params), "version": p.target_version}  # latest-N moves once restored
    downstream = ", ".join(p.downstream) or "none"
    if p.downstream and not outcome.reprocess_run_id:
        after = ("# rebuild the tables built from it:\n"
                 + command("restore", env=env, **{**exact, "reprocess_downstream": True}, dry_run=False,
                           **({"confirm": True} if env in ("qa", "prod") else {})))
    else:
        after = "# check the dashboards' tables are fresh:\n" + command("data_freshness", env=env)
    return of_change(
        "restore", env=env, dry_run=outcome.dry_run, held=outcome.held,
        symptom=f"numbers wrong in {p.ref.full} after a write (version {p.current_version})",
        diagnosis=f"Version {p.target_version} holds {p.target_rows} rows, the current version {p.current_version} "
                  f"holds {p.current_rows}: restore {p.ref.full} to version {p.target_version}; downstream: {downstream}.",
        evidence=f"rows {p.current_rows} now vs {p.target_rows} at version {p.target_version}; "
                 f"{len(p.only_in_current)} sample row(s) only in the current version, {len(p.only_in_target)} only in the target",
        message=outcome.message + (f" Downstream reprocessed by run {outcome.reprocess_run_id}." if outcome.reprocess_run_id else ""),
        parameters=exact, after=after)
