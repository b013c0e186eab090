"""`send` and `resolve`: dedup against `monitoring.alerts`, route, deliver, record.

The work runs in a background thread; the caller waits for it at most `wait` seconds (config
`alerts.wait_seconds`) and gets an `AlertOutcome` (``pending`` if it is still delivering: the row is
written when it is done). Nothing here raises into the caller: problems are logged (secrets
redacted) and recorded in the row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from retail_lakehouse.alerts import channels, store
from retail_lakehouse.alerts.config import AlertsConfig, load_config
from retail_lakehouse.alerts.model import Alert, AlertOutcome, row_status
from retail_lakehouse.alerts.routing import decide, route
from retail_lakehouse.alerts.secrets import REDACT, SecretReader
from retail_lakehouse.core.config import current_env

log = logging.getLogger(__name__)

_lock = threading.Lock()
_key_locks: dict[tuple[str, str], threading.Lock] = {}
_running: set[threading.Thread] = set()


def _key_lock(env: str, key: str) -> threading.Lock:
    # One incident at a time per key in this process: a repeat waits for the first row, then is counted.
    with _lock:
        return _key_locks.setdefault((env, key), threading.Lock())


def _problem(problems: list[str], what: str, exc: BaseException) -> None:
    text = REDACT(f"{what}: {type(exc).__name__}: {str(exc)[:500]}")
    log.warning("alerts: %s", text)
    problems.append(text)


def _run(
    work: Callable[[], AlertOutcome], key: str, wait: float | None, default_wait: Callable[[], float]
) -> AlertOutcome:
    box: list[AlertOutcome] = []

    def target() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # noqa: BLE001 - the caller must never see it
            problems: list[str] = []
            _problem(problems, "alert processing failed", exc)
            box.append(AlertOutcome("error", key, problems=tuple(problems)))
        finally:
            with _lock:
                _running.discard(threading.current_thread())

    # Not a daemon: an alert still delivering when the program ends is finished (bounded by timeouts).
    thread = threading.Thread(target=target, name=f"alert:{key}"[:60], daemon=False)
    with _lock:
        _running.add(thread)
    thread.start()
    try:
        timeout = default_wait() if wait is None else wait
    except Exception:
        timeout = 20.0
    thread.join(timeout=max(timeout, 0))
    return box[0] if box else AlertOutcome("pending", key)


def _config(env: str, problems: list[str]) -> AlertsConfig | None:
    try:
        return load_config(env)
    except Exception as exc:
        _problem(problems, "alerts config", exc)
        return None


def _wait_default(env: str) -> Callable[[], float]:
    return lambda: load_config(env).wait_seconds


def send(
    alert: Alert,
    *,
    env: str | None = None,
    wait: float | None = None,
    destinations: Sequence[str] | None = None,
    workspace: Any = None,
) -> AlertOutcome:
    """Notify an incident, once per key: a repeat within the suppression window is counted on the open row.

    Args:
        alert: what happened.
        env: environment (default `LAKEHOUSE_ENV` or `local`); picks the config and the table.
        wait: seconds to wait for delivery and the row (default `alerts.wait_seconds`); after it the
            outcome is ``pending`` and the work finishes in the background (see `flush`).
        destinations: send to these destinations instead of the routed ones (e.g. a test alert).
        workspace: a `databricks.sdk.WorkspaceClient` to read secret scopes with (default: the env's profile).

    Returns:
        What was done; never raises.
    """
    env = env or current_env()
    return _run(lambda: _send(alert, env, destinations, workspace), alert.key, wait, _wait_default(env))


def _send(alert: Alert, env: str, destinations: Sequence[str] | None, workspace: Any) -> AlertOutcome:
    problems: list[str] = []
    config = _config(env, problems)
    with _key_lock(env, alert.key):
        now = store.now()
        try:
            opened = store.open_incidents(alert.key, env)
        except Exception as exc:
            _problem(problems, "could not read monitoring.alerts (sending anyway)", exc)
            opened = []
        latest = opened[0][0] if opened else None
        if config and decide(latest, now, config.suppress_window) == "suppress" and latest is not None:
            count = latest.suppressed_count + 1
            try:
                store.merge(
                    [
                        {
                            "alert_id": latest.alert_id,
                            "suppressed_count": count,
                            "last_seen_at": now,
                            "updated_at": now,
                        }
                    ],
                    env,
                )
            except Exception as exc:
                _problem(problems, "could not count the repeat in monitoring.alerts", exc)
            log.info("alerts: %s repeated within the window: suppressed (%d so far)", alert.key, count)
            return AlertOutcome("suppressed", alert.key, latest.alert_id, opened[0][1].get("delivery_status"),
                                suppressed_count=count, problems=tuple(problems))  # fmt: skip
        alert_id = uuid.uuid4().hex
        deliveries: tuple = ()
        if config:
            names = list(destinations) if destinations is not None else route(alert, config.routes)
            notification = channels.Notification("trigger", alert, env, alert_id)
            deliveries = channels.deliver_all(names, notification, config, SecretReader(env, workspace))
        row = store.new_row(
            alert_id, alert, env, deliveries, now, config_problem=None if config else problems[0]
        )
        try:
            store.merge([row], env)
            store.mark(alert.key, env, is_open=True)
        except Exception as exc:
            _problem(problems, "could not record the alert in monitoring.alerts", exc)
    failed = [d for d in deliveries if d.status == "FAILED"]
    for d in failed:
        log.warning(
            "alerts: %s to %s failed after %d attempt(s): %s", alert.key, d.destination, d.attempts, d.detail
        )
    log.info("alerts: %s %s -> %s", alert.severity, alert.key, row["delivery_status"])
    return AlertOutcome(
        "sent", alert.key, alert_id, row["delivery_status"], deliveries, problems=tuple(problems)
    )


def resolve(
    key: str, *, env: str | None = None, wait: float | None = None, workspace: Any = None
) -> AlertOutcome:
    """The incident cleared: send a resolved notification where it was sent (PagerDuty: resolve on the
    same dedup_key) and mark its open rows resolved. A key with no open row does nothing (``nothing_open``).

    Args:
        key: the incident key the alert was sent with.
        env, wait, workspace: as for `send`.

    Returns:
        What was done; never raises.
    """
    env = env or current_env()
    return _run(lambda: _resolve(key, env, workspace), key, wait, _wait_default(env))


def _resolve(key: str, env: str, workspace: Any) -> AlertOutcome:
    problems: list[str] = []
    with _key_lock(env, key):
        try:
            opened = store.open_incidents(key, env)
        except Exception as exc:
            _problem(problems, "could not read monitoring.alerts (nothing resolved)", exc)
            return AlertOutcome("error", key, problems=tuple(problems))
        if not opened:
            _unmark(key, env)
            return AlertOutcome("nothing_open", key)
        latest, row = opened[0]
        config = _config(env, problems)
        deliveries: tuple = ()
        if config:
            alert = Alert(key=key, severity=row["severity"], source=row["source"], summary=row["summary"],
                          link=row["link"] or "", runbook=row["runbook"] or "", command=row["command"] or "")  # fmt: skip
            notification = channels.Notification(
                "resolve", alert, env, latest.alert_id, latest.suppressed_count
            )
            names = [d for d in latest.destinations if d in config.destinations]
            deliveries = channels.deliver_all(names, notification, config, SecretReader(env, workspace))
        now = store.now()
        resolved = store.delivery_json(deliveries) if config else json.dumps({"config": problems[-1]})
        updates = [
            {"alert_id": i.alert_id, "resolved_at": now, "resolve_delivery": resolved, "updated_at": now}
            for i, _ in opened
        ]
        try:
            store.merge(updates, env)
            _unmark(key, env)
        except Exception as exc:
            _problem(problems, "could not mark the alert resolved in monitoring.alerts", exc)
    status = row_status(deliveries) if config else "FAILED"
    log.info("alerts: %s resolved -> %s", key, status)
    return AlertOutcome(
        "resolved", key, latest.alert_id, status, deliveries, latest.suppressed_count, tuple(problems)
    )


def _unmark(key: str, env: str) -> None:
    try:
        store.mark(key, env, is_open=False)
    except OSError as exc:
        log.warning("alerts: could not clear the open marker of %s: %s", key, exc)


def open_keys(prefix: str = "", *, env: str | None = None) -> set[str] | None:
    """Incident keys starting with `prefix` that have an unresolved alert, so a caller resolves only
    those (locally no query at all; elsewhere one query). None when it cannot tell (logged): resolve
    every key then. Never raises.
    """
    env = env or current_env()
    try:
        return store.open_keys(env, prefix)
    except Exception as exc:
        log.warning("alerts: could not list open alerts: %s", REDACT(f"{type(exc).__name__}: {exc}"[:500]))
        return None


def update(
    firing: Sequence[Alert],
    clear: Sequence[str] = (),
    *,
    prefix: str = "",
    env: str | None = None,
    wait: float | None = None,
    workspace: Any = None,
) -> dict[str, AlertOutcome]:
    """Send the incidents that fire and resolve the cleared keys that are open, as one batch.

    A monitor that judges many things per run (tables, streams) calls this once: one read of the
    open incidents (none locally when the marker files say nothing is open), every delivery at once,
    one MERGE for the new rows and one for the updates. Same rules as `send` and `resolve`.

    Args:
        firing: alerts to send (a repeat within the window is counted, see `send`).
        clear: incident keys judged healthy this run.
        prefix: the keys' common prefix (e.g. ``freshness:``), for `open_keys`.
        env: environment (default `LAKEHOUSE_ENV` or `local`).
        wait: seconds to wait for the batch (default `alerts.wait_seconds`); after it every key is
            ``pending`` and the batch finishes in the background (see `flush`).
        workspace: as for `send`.

    Returns:
        Incident key -> what was done (nothing for a cleared key with no open alert). Never raises.
    """
    env = env or current_env()
    firing = list({a.key: a for a in firing}.values())
    fired = {a.key for a in firing}
    opened = open_keys(prefix, env=env) if clear or firing else set()
    clear = [k for k in dict.fromkeys(clear) if k not in fired and (opened is None or k in opened)]
    if not firing and not clear:
        return {}
    # Locally the markers are the truth: no query when none of these keys is open.
    read = opened is None or any(k in opened for k in [*fired, *clear])
    box: list[dict[str, AlertOutcome]] = []

    def work() -> AlertOutcome:
        box.append(_update(firing, clear, env, read, workspace))
        return AlertOutcome("sent", "update")

    keys = [*fired, *clear]
    outcome = _run(work, f"update:{prefix}"[:255], wait, _wait_default(env))
    if box:
        return box[0]
    if outcome.action == "error":
        return {k: AlertOutcome("error", k, problems=outcome.problems) for k in keys}
    return {k: AlertOutcome("pending", k) for k in keys}


def _update(
    firing: list[Alert], clear: list[str], env: str, read: bool, workspace: Any
) -> dict[str, AlertOutcome]:
    batch = _Batch(env, workspace)
    keys = sorted({*(a.key for a in firing), *clear})
    with contextlib.ExitStack() as held:
        for key in keys:  # sorted: two batches never wait for each other's keys crosswise
            held.enter_context(_key_lock(env, key))
        opened = batch.read(keys) if read else {}
        if opened is None:  # unreadable: send anyway, resolve nothing
            opened, clear = {}, []
        batch.plan(firing, clear, opened)
        batch.deliver()
        batch.record()
    return batch.outcomes()


class _Batch:
    """One `update`: what to send, count and resolve; deliveries at once; one MERGE per kind of row."""

    def __init__(self, env: str, workspace: Any) -> None:
        self.env, self.workspace = env, workspace
        self.problems: list[str] = []
        self.config = _config(env, self.problems)
        self.now = store.now()
        self.out: dict[str, AlertOutcome] = {}
        self.counted: list[dict[str, Any]] = []
        self.triggers: dict[str, tuple[Alert, str]] = {}
        self.resolving: dict[str, list] = {}
        self.jobs: dict[str, Callable[[], tuple]] = {}
        self.delivered: dict[str, tuple] = {}

    def read(self, keys: list[str]) -> dict[str, list] | None:
        try:
            return store.open_incidents_many(keys, self.env)
        except Exception as exc:
            _problem(
                self.problems, "could not read monitoring.alerts (sending anyway, resolving nothing)", exc
            )
            return None

    def _job(self, name: str, names: list[str], n: channels.Notification) -> None:
        config, secrets = self.config, SecretReader(self.env, self.workspace)
        assert config is not None
        self.jobs[name] = lambda: channels.deliver_all(names, n, config, secrets)

    def plan(self, firing: list[Alert], clear: list[str], opened: dict[str, list]) -> None:
        config = self.config
        for alert in firing:
            incidents = opened.get(alert.key) or []
            latest = incidents[0][0] if incidents else None
            if (
                config
                and latest is not None
                and decide(latest, self.now, config.suppress_window) == "suppress"
            ):
                count = latest.suppressed_count + 1
                self.counted.append({"alert_id": latest.alert_id, "suppressed_count": count,
                                     "last_seen_at": self.now, "updated_at": self.now})  # fmt: skip
                self.out[alert.key] = AlertOutcome("suppressed", alert.key, latest.alert_id,
                                                   incidents[0][1].get("delivery_status"), suppressed_count=count)  # fmt: skip
                continue
            alert_id = uuid.uuid4().hex
            self.triggers[alert.key] = (alert, alert_id)
            if config:
                n = channels.Notification("trigger", alert, self.env, alert_id)
                self._job(alert.key, route(alert, config.routes), n)
        for key in clear:
            incidents = opened.get(key) or []
            if not incidents:
                self.out[key] = AlertOutcome("nothing_open", key)
                _unmark(key, self.env)
                continue
            latest, row = incidents[0]
            self.resolving[key] = incidents
            if config:
                alert = Alert(key=key, severity=row["severity"], source=row["source"], summary=row["summary"],
                              link=row["link"] or "", runbook=row["runbook"] or "", command=row["command"] or "")  # fmt: skip
                n = channels.Notification(
                    "resolve", alert, self.env, latest.alert_id, latest.suppressed_count
                )
                self._job(f"resolve:{key}", [d for d in latest.destinations if d in config.destinations], n)

    def deliver(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if not self.jobs:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(self.jobs)), thread_name_prefix="alert-batch") as pool:
            futures = {k: pool.submit(job) for k, job in self.jobs.items()}
        for k, f in futures.items():
            try:
                self.delivered[k] = f.result()
            except Exception as exc:
                _problem(self.problems, f"delivery of {k} failed", exc)
                self.delivered[k] = ()

    def record(self) -> None:
        now, config = self.now, self.config
        new_rows = []
        for key, (alert, alert_id) in self.triggers.items():
            deliveries = self.delivered.get(key, ())
            row = store.new_row(alert_id, alert, self.env, deliveries, now,
                                config_problem=None if config else self.problems[0])  # fmt: skip
            new_rows.append(row)
            self.out[key] = AlertOutcome("sent", key, alert_id, row["delivery_status"], deliveries)
        resolved_rows = []
        for key, incidents in self.resolving.items():
            latest = incidents[0][0]
            deliveries = self.delivered.get(f"resolve:{key}", ())
            payload = store.delivery_json(deliveries) if config else json.dumps({"config": self.problems[0]})
            resolved_rows += [{"alert_id": i.alert_id, "resolved_at": now, "resolve_delivery": payload,
                               "updated_at": now} for i, _ in incidents]  # fmt: skip
            status = row_status(deliveries) if config else "FAILED"
            self.out[key] = AlertOutcome("resolved", key, latest.alert_id, status, deliveries,
                                         latest.suppressed_count)  # fmt: skip
        self._merge(new_rows, "record the alerts", list(self.triggers), True)
        self._merge(self.counted, "count the repeats", [], True)
        self._merge(resolved_rows, "mark the alerts resolved", list(self.resolving), False)

    def _merge(self, rows: list[dict[str, Any]], what: str, keys: list[str], is_open: bool) -> None:
        if not rows:
            return
        try:
            store.merge(rows, self.env)
        except Exception as exc:
            _problem(self.problems, f"could not {what} in monitoring.alerts", exc)
            return
        for key in keys:
            try:
                store.mark(key, self.env, is_open=is_open)
            except OSError as exc:
                log.warning("alerts: could not update the open marker of %s: %s", key, exc)

    def outcomes(self) -> dict[str, AlertOutcome]:
        for key, o in self.out.items():
            if o.status in ("FAILED", "PARTIAL"):
                log.warning("alerts: %s %s -> %s", o.action, key, o.status)
        log.info("alerts: batch of %d: %s", len(self.out),
                 ", ".join(f"{k} {o.action}" for k, o in sorted(self.out.items())))  # fmt: skip
        if not self.problems:
            return self.out
        problems = tuple(self.problems)
        return {k: AlertOutcome(o.action, o.key, o.alert_id, o.status, o.deliveries, o.suppressed_count, problems)
                for k, o in self.out.items()}  # fmt: skip


def flush(timeout: float = 60.0) -> bool:
    """Wait for alerts still being delivered in the background; True when none is left."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        with _lock:
            threads = list(_running)
        if not threads:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        threads[0].join(timeout=remaining)
