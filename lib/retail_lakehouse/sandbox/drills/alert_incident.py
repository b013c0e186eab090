"""Drill: a quality check fails and the on-call engineer is told; the fix resolves the alert.

With the local receivers listening (a running `lakehouse alerts listen`, else started here for the
rest of this process), silver.stores is emptied (an empty extract reloaded as a snapshot), the
table's quality checks run and alert `quality:silver.stores` (Slack, e-mail, webhook, as
params/local.yaml routes an error); the checks run again (the repeat is suppressed and counted);
the table is restored to its last good version, the checks pass and the alert is resolved. The
lakehouse is left as it was; `alerts_review` shows the rows and the payloads as received.
"""

from __future__ import annotations

import atexit
import json
import os
from typing import Any

from retail_lakehouse.sandbox.drills import DrillResult, register

REF = "silver.stores"
KEY = f"quality:{REF}"
_RECEIVERS: list[Any] = []  # receivers this process started (kept for the notebook that follows)


def ensure_receivers() -> dict[str, Any]:
    """The running local receivers (their receivers.json), starting them in this process if none runs."""
    from retail_lakehouse.alerts.config import receivers_file
    from retail_lakehouse.sandbox.alert_receivers import Receivers

    try:
        info = json.loads(receivers_file().read_text())
        os.kill(int(info["pid"]), 0)
        return info
    except (OSError, ValueError, KeyError):
        pass
    receivers = Receivers(0, 0).start()
    _RECEIVERS.append(receivers)
    atexit.register(receivers.stop)
    return json.loads(receivers_file().read_text())


@register("alert_incident", notebook="alerts_review",
          summary="silver.stores emptied -> the failed check alerts Slack, e-mail and the webhook at the local "
                  "receivers; a repeat is suppressed; restored -> the alert is resolved")  # fmt: skip
def alert_incident() -> DrillResult:
    """Break silver.stores, alert, repeat, fix, resolve; the lakehouse ends as it began."""
    from retail_lakehouse import engine
    from retail_lakehouse.pipeline.quality import run_checks
    from retail_lakehouse.pipeline.quality_alerts import notify_quality
    from retail_lakehouse.sandbox.drills import _local

    info = ensure_receivers()
    version, rows = _local.version(REF), _local.count(REF)
    engine.sql(f"DELETE FROM {_local.full(REF)}", env="local").collect()
    try:
        broken = run_checks([REF], run_id="drill_alert_incident_1", env="local")
        sent = notify_quality(broken, env="local")[KEY]
        repeat = notify_quality(run_checks([REF], run_id="drill_alert_incident_2", env="local"), env="local")[KEY]
    finally:
        engine.sql(f"RESTORE TABLE {_local.full(REF)} TO VERSION AS OF {version}", env="local").collect()
    fixed = run_checks([REF], run_id="drill_alert_incident_3", env="local")
    resolved = notify_quality(fixed, env="local").get(KEY)
    failed = [f"{r.check_name} {r.check_status}" for r in broken.results if r.check_status in ("FAILED", "ERROR")]
    deliveries = ", ".join(f"{d.destination} {d.status}" for d in sent.deliveries)
    return DrillResult(
        name="alert_incident",
        notebook="alerts_review",
        description=(
            f"silver.stores was emptied ({rows} rows, version {version}); its checks failed ({', '.join(failed)}) "
            f"and alert {KEY} went to the local receivers on 127.0.0.1:{info['http_port']} (HTTP) and "
            f":{info['smtp_port']} (SMTP): {deliveries}. The same failure again was {repeat.action}; after "
            f"RESTORE to version {version} the checks passed and the alert was "
            f"{resolved.action if resolved else 'not open'}."
        ),
        parameters={"env": "local", "key": KEY},
        facts={"table": REF, "key": KEY, "version_before": version, "rows_before": rows, "sent": sent.action,
               "status": sent.status, "repeat": repeat.action, "resolved": resolved.action if resolved else None,
               "failed_checks": failed, "received_dir": info.get("received")},  # fmt: skip
    )
