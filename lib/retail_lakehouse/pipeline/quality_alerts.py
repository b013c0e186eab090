"""Alerts of a quality run: one per table with FAILED or ERROR checks (key ``quality:<layer>.<table>``),
resolved when the table passes again.

    report = run_checks(tables, run_id=run_id, env=env)
    notify_quality(report, env=env)      # before report.raise_for_errors()

Each alert names the failing checks, links the run and gives the papermill command of
`quality_failure_triage` for that table and day. `alerts.update` sends them and resolves the
open alerts of passing tables (one `open_keys` per run, locally no query). Never raises.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from retail_lakehouse import alerts
from retail_lakehouse.core.config import current_env
from retail_lakehouse.pipeline.quality import QualityReport, table_ref
from retail_lakehouse.pipeline.quality_model import CheckResult

__all__ = ["KEY_PREFIX", "notify_quality", "quality_alert"]

log = logging.getLogger(__name__)

KEY_PREFIX = "quality:"
BAD = ("FAILED", "ERROR")


def quality_alert(ref: str, bad: list[CheckResult], report: QualityReport, env: str) -> alerts.Alert:
    """The alert of a table with failed / errored checks."""
    errors = sum(r.check_status == "ERROR" for r in bad)
    counts = ", ".join(f"{n} {s}" for s, n in (("FAILED", len(bad) - errors), ("ERROR", errors)) if n)
    first = "; ".join(f"{r.check_name}: {r.details}" for r in bad[:2])
    day = f"{report.check_timestamp:%Y-%m-%d}" if report.check_timestamp else ""
    return alerts.Alert(
        key=f"{KEY_PREFIX}{ref}",
        severity="critical" if env == "prod" else "error",
        source="quality",
        summary=f"{ref}: {counts} check(s) in quality run {report.run_id}: {first}"[:900],
        link=f"monitoring.quality_metrics run_id={report.run_id}",
        runbook=alerts.runbook_page("quality_failure_triage"),
        command=alerts.papermill_command(
            "quality_failure_triage",
            f"runs/quality_failure_triage-{ref}.ipynb",
            env=env,
            table=ref,
            **({"date": day} if day else {}),
        ),
    )


def notify_quality(
    report: QualityReport, *, env: str | None = None, wait: float = 10.0
) -> dict[str, alerts.AlertOutcome]:
    """Send an alert per table with FAILED/ERROR checks; resolve the open ones of tables that passed.

    Args:
        report: the run's results.
        env: environment (default the current one).
        wait: seconds to wait for each table's delivery (up to 4 at once); then it finishes in the
            background (`alerts.flush`).

    Returns:
        Incident key -> what was done. Never raises (problems are logged).
    """
    env = env or current_env()
    by_table: dict[str, list[CheckResult]] = defaultdict(list)
    for r in report.results:
        by_table[table_ref(r.table_name)].append(r)
    try:
        failing = {ref: [r for r in rs if r.check_status in BAD] for ref, rs in by_table.items()}
        firing = [quality_alert(ref, bad, report, env) for ref, bad in sorted(failing.items()) if bad]
        clear = [f"{KEY_PREFIX}{ref}" for ref, bad in sorted(failing.items()) if not bad]
        return alerts.update(firing, clear, prefix=KEY_PREFIX, env=env, wait=wait)
    except Exception as exc:  # noqa: BLE001 - alerting never fails the quality job
        log.warning("quality run %s: alerting failed: %s", report.run_id, exc)
        return {}
