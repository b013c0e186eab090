"""Alerts: notify incidents (Slack, e-mail, PagerDuty, webhook), once per incident key, and record
each in `retail_datalake.<env>_monitoring.alerts`.

    from retail_lakehouse import alerts

    alerts.send(alerts.Alert(key="job:retail_daily", severity="error", source="job",
                             summary="retail_daily failed: task gold_fact_sales", link=run_url,
                             runbook="https://.../job_failure_triage.html",
                             command="papermill ops_notebooks/job_failure_triage.ipynb out.ipynb -p job_run_id 42"))
    alerts.resolve("job:retail_daily")

Destinations and routes are in `params/<env>.yaml` (`alerts:`); neither call raises or blocks long.
"""

from __future__ import annotations

from retail_lakehouse.alerts.config import AlertsConfig, load_config
from retail_lakehouse.alerts.model import (
    SEVERITIES,
    SOURCES,
    Alert,
    AlertOutcome,
    Delivery,
    papermill_command,
    runbook_page,
)
from retail_lakehouse.alerts.service import flush, open_keys, resolve, send, update

__all__ = [
    "SEVERITIES",
    "SOURCES",
    "Alert",
    "AlertOutcome",
    "AlertsConfig",
    "Delivery",
    "flush",
    "load_config",
    "open_keys",
    "papermill_command",
    "resolve",
    "runbook_page",
    "send",
    "update",
]
