"""Alerts of the ops monitors: stale tables (`data_freshness`), a lagging stream
(`diagnose_streaming_lag`) and spend over budget (`cost_review`).

Each monitor calls one function here with what it judged; an incident alerts once per key and is
resolved when the next run judges it healthy:

    ``freshness:<table>``      a table STALE or MISSING               -> data_freshness
    ``stream_lag:<stream>``    the stream is lagging                  -> diagnose_streaming_lag
    ``cost:<start>..<end>``    list cost of the period over budget    -> cost_review

Budgets are declared per environment in `params/<env>.yaml` (`alerts.budgets`, pro rata to the
period). Every alert links its runbook page and gives the papermill command of the procedure with
its parameters. Nothing here raises or blocks longer than `wait` (the rest is delivered in the
background): a monitor's verdict never depends on a receiver.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from retail_lakehouse import alerts

if TYPE_CHECKING:
    import pandas as pd

    from retail_lakehouse.ops.cost_review import CostReview
    from retail_lakehouse.ops.diagnose_streaming_lag import LagDiagnosis

__all__ = ["cost", "freshness", "stream_lag"]

log = logging.getLogger(__name__)

DEFAULT_WAIT_SECONDS = 10.0


def _safely(what: str, fn: Any) -> dict[str, alerts.AlertOutcome]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - alerting never fails a monitor
        log.warning("%s: alerting failed: %s: %s", what, type(exc).__name__, exc)
        return {}


def freshness(
    report: pd.DataFrame, *, env: str, wait: float = DEFAULT_WAIT_SECONDS
) -> dict[str, alerts.AlertOutcome]:
    """One alert per table not FRESH (``freshness:<table>``); fresh tables resolve theirs.

    Args:
        report: `data_freshness.judge`'s frame (table, status, reason, ...).
        env: environment.
        wait: seconds to wait for delivery.

    Returns:
        Incident key -> what was done. Never raises.
    """

    def work() -> dict[str, alerts.AlertOutcome]:
        firing, clear = [], []
        for row in report.itertuples():
            key = f"freshness:{row.table}"
            if row.status == "FRESH":
                clear.append(key)
                continue
            firing.append(
                alerts.Alert(
                    key=key,
                    severity="critical" if env == "prod" else "warning" if row.status == "STALE" else "error",
                    source="freshness",
                    summary=f"{row.table} is {row.status}: {row.reason}",
                    link=str(row.full_name),
                    runbook=alerts.runbook_page("data_freshness"),
                    command=alerts.papermill_command(
                        "data_freshness", "runs/data_freshness.ipynb", env=env, fail_on_stale=True
                    ),
                )
            )
        return alerts.update(firing, clear, prefix="freshness:", env=env, wait=wait)

    return _safely("data_freshness", work)


def stream_lag(
    diagnosis: LagDiagnosis, *, env: str, wait: float = DEFAULT_WAIT_SECONDS
) -> dict[str, alerts.AlertOutcome]:
    """Alert ``stream_lag:<stream>`` when the stream is lagging; resolve it when it keeps up.

    A stream with no progress rows is neither (nothing to judge).

    Returns:
        Incident key -> what was done. Never raises.
    """

    def work() -> dict[str, alerts.AlertOutcome]:
        key = f"stream_lag:{diagnosis.stream}"
        if diagnosis.cause == "no_data":
            return {}
        if not diagnosis.measures.get("lagging"):
            return alerts.update([], [key], prefix=key, env=env, wait=wait)
        alert = alerts.Alert(
            key=key,
            severity="critical" if env == "prod" else "warning",
            source="stream_lag",
            summary=f"{diagnosis.cause}: {diagnosis.diagnosis}"[:900],
            link=f"monitoring.stream_progress name={diagnosis.stream}",
            runbook=alerts.runbook_page("diagnose_streaming_lag"),
            command=alerts.papermill_command(
                "diagnose_streaming_lag",
                f"runs/diagnose_streaming_lag-{diagnosis.stream}.ipynb",
                env=env,
                stream=diagnosis.stream,
            ),
        )
        return alerts.update([alert], env=env, wait=wait)

    return _safely("diagnose_streaming_lag", work)


def cost(
    review: CostReview, *, env: str, wait: float = DEFAULT_WAIT_SECONDS
) -> dict[str, alerts.AlertOutcome]:
    """Alert ``cost:<start>..<end>`` when the period's list cost exceeds the env's budget
    (`alerts.budgets`, pro rata); within budget, resolve an open alert of the same period.

    Returns:
        Incident key -> what was done (nothing when no budget is declared). Never raises.
    """

    def work() -> dict[str, alerts.AlertOutcome]:
        days = (review.end - review.start).days + 1
        budget = alerts.load_config(env).budget_for(days)
        if budget is None:
            return {}
        allowed, how = budget
        key = f"cost:{review.start}..{review.end}"
        spent = review.total_cost
        if spent <= allowed:
            return alerts.update([], [key], prefix="cost:", env=env, wait=wait)
        top = ""
        if len(review.by_job):
            first = review.by_job.iloc[0]
            top = f"; top spender {first['job_name']} (${float(first['list_cost']):.2f})"
        alert = alerts.Alert(
            key=key,
            severity="warning",
            source="cost",
            summary=(
                f"spend ${spent:.2f} from {review.start} to {review.end} is over the {env} budget "
                f"${allowed:.2f} ({how}) by ${spent - allowed:.2f}{top}"
            ),
            link=f"system.billing.usage {review.start}..{review.end}",
            runbook=alerts.runbook_page("cost_review"),
            command=alerts.papermill_command(
                "cost_review",
                f"runs/cost_review-{review.end}.ipynb",
                env=env,
                start_date=review.start,
                end_date=review.end,
            ),
        )
        return alerts.update([alert], env=env, wait=wait)

    return _safely("cost_review", work)
