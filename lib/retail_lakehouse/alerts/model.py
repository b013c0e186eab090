"""What an alert is (`Alert`), what delivering it did (`Delivery`) and what `send`/`resolve` report
(`AlertOutcome`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from retail_lakehouse.core.errors import ParameterError

Severity = Literal["critical", "error", "warning", "info"]
Source = Literal["job", "quality", "freshness", "stream_lag", "cost"]
SEVERITIES: tuple[str, ...] = ("critical", "error", "warning", "info")
SOURCES: tuple[str, ...] = ("job", "quality", "freshness", "stream_lag", "cost")

DeliveryStatus = Literal["DELIVERED", "FAILED"]
# Of a row: every destination delivered, some, none, or no destination routed (or a config error).
RowStatus = Literal["DELIVERED", "PARTIAL", "FAILED", "NO_DESTINATION"]
Action = Literal["sent", "suppressed", "resolved", "nothing_open", "pending", "error"]

_KEY = re.compile(r"^[A-Za-z0-9_.:/@=+-]{1,255}$")


@dataclass(frozen=True)
class Alert:
    """One incident to notify.

    Attributes:
        key: the incident key; one notification per key until it is resolved (repeats within the
            suppression window are counted, not sent). Also PagerDuty's dedup_key. E.g.
            ``job:retail_daily``, ``quality:silver.orders:not_null_order_id``, ``freshness:gold.fact_sales``.
        severity: ``critical``, ``error``, ``warning`` or ``info``.
        source: what raised it: ``job``, ``quality``, ``freshness``, ``stream_lag`` or ``cost``.
        summary: one line for humans (PagerDuty keeps the first 1,024 characters).
        link: the run or notebook that shows the failure.
        runbook: the runbook page of the procedure that handles it.
        command: the papermill command of that procedure, ready to paste.

    Raises:
        ParameterError: an empty or over-long key, an unknown severity or source, an empty summary.
    """

    key: str
    severity: Severity
    source: Source
    summary: str
    link: str = ""
    runbook: str = ""
    command: str = ""

    def __post_init__(self) -> None:
        if not _KEY.match(self.key or ""):
            raise ParameterError(
                "key",
                f"{self.key!r} is not an incident key: 1-255 characters of letters, digits and _.:/@=+-",
            )
        if self.severity not in SEVERITIES:
            raise ParameterError("severity", f"{self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if self.source not in SOURCES:
            raise ParameterError("source", f"{self.source!r} is not one of {', '.join(SOURCES)}")
        if not (self.summary or "").strip():
            raise ParameterError("summary", "an alert needs a one-line summary")


# The runbook page (book/ file and section label) of each procedure an alert points to.
RUNBOOK_PAGES: dict[str, str] = {
    "job_failure_triage": "book/failure_handling.md#job-failures",
    "quality_failure_triage": "book/failure_handling.md#quality-failures",
    "data_freshness": "book/monitoring.md#freshness",
    "diagnose_streaming_lag": "book/troubleshooting.md#streaming-lag",
    "cost_review": "book/cost.md",
}


def runbook_page(notebook: str) -> str:
    """The runbook page of a procedure, for `Alert.runbook` (its chapter and section)."""
    return RUNBOOK_PAGES.get(notebook, f"ops_notebooks/{notebook}.ipynb")


def papermill_command(notebook: str, output: str = "out.ipynb", **parameters: object) -> str:
    """The command that runs an ops procedure, for `Alert.command`.

    Example: ``papermill_command("job_failure_triage", env="prod", job_run_id="42")`` ->
    ``papermill ops_notebooks/job_failure_triage.ipynb out.ipynb -p env prod -p job_run_id 42``.
    """
    import shlex

    args = "".join(f" -p {name} {shlex.quote(str(value))}" for name, value in parameters.items())
    return f"papermill ops_notebooks/{notebook}.ipynb {shlex.quote(output)}{args}"


@dataclass(frozen=True)
class Delivery:
    """The delivery of one notification to one destination.

    Attributes:
        destination: its name in `alerts.destinations`.
        status: ``DELIVERED`` or ``FAILED``.
        attempts: attempts made (retries with backoff on network errors, timeouts, HTTP 429/5xx).
        detail: the receiver's answer or the last error, secrets redacted.
        seconds: time spent, retries and backoff included.
    """

    destination: str
    status: DeliveryStatus
    attempts: int
    detail: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "attempts": self.attempts,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


def row_status(deliveries: tuple[Delivery, ...] | list[Delivery]) -> RowStatus:
    """The status of a row from its deliveries."""
    if not deliveries:
        return "NO_DESTINATION"
    ok = sum(d.status == "DELIVERED" for d in deliveries)
    return "DELIVERED" if ok == len(deliveries) else "PARTIAL" if ok else "FAILED"


@dataclass(frozen=True)
class AlertOutcome:
    """What `send` or `resolve` did (never raised: problems are listed here and logged).

    Attributes:
        action: ``sent``, ``suppressed`` (a repeat within the window: counted on the open row),
            ``resolved``, ``nothing_open`` (resolve of a key with no open alert), ``pending`` (still
            delivering when the caller's wait ended; the row is written when it is done) or ``error``.
        key: the incident key.
        alert_id: the row in `monitoring.alerts` (for ``suppressed``: the open row that was counted).
        status: the row's delivery status (``DELIVERED``, ``PARTIAL``, ``FAILED``, ``NO_DESTINATION``).
        deliveries: one per destination.
        suppressed_count: repeats counted on the row so far.
        problems: what went wrong besides deliveries (config, table), secrets redacted.
    """

    action: Action
    key: str
    alert_id: str | None = None
    status: str | None = None
    deliveries: tuple[Delivery, ...] = ()
    suppressed_count: int = 0
    problems: tuple[str, ...] = field(default=())

    @property
    def delivered(self) -> bool:
        return self.status == "DELIVERED"
