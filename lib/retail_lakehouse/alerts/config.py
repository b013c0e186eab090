"""The `alerts:` section of `params/<env>.yaml`: destinations, routes, suppression window, retries.

Validated as a whole: `load_config` raises one `ConfigError` that lists every problem. Secrets
(webhook URLs, PagerDuty routing keys, SMTP passwords) are never values in the file: a destination
names an environment variable (``url_env: LAKEHOUSE_SLACK_WEBHOOK_URL``) or, outside `local`, a
Databricks secret (``url_secret: {scope: retail-prod, key: slack-webhook}``; ``secret:`` is short for
the destination's main secret). In `local`, ``local_receiver: true`` points a destination at the
receivers of `lakehouse alerts listen` (their ports from LAKEHOUSE_HOME/alerts/receivers.json).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from retail_lakehouse.alerts.model import SEVERITIES, SOURCES
from retail_lakehouse.core.config import lakehouse_home, load_settings
from retail_lakehouse.core.errors import ConfigError

TYPES: tuple[str, ...] = ("slack", "email", "pagerduty", "webhook")
# The secret a destination type cannot work without (`secret:` is short for it).
MAIN_SECRET = {"slack": "url", "webhook": "url", "pagerduty": "routing_key", "email": "password"}
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
LOCAL_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8725
DEFAULT_SMTP_PORT = 8025

_PLAIN = {
    "slack": {"channel"},
    "webhook": {"headers"},
    "pagerduty": {"events_url"},
    "email": {"host", "port", "sender", "to", "username", "starttls", "ssl"},
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from: an environment variable or a Databricks secret (scope, key). Never the value."""

    env_var: str | None = None
    scope: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        return f"${self.env_var}" if self.env_var else f"secret {self.scope}/{self.key}"


@dataclass(frozen=True)
class Destination:
    """One configured destination (no secret values: `secrets` names where they come from).

    Attributes:
        name: its name in the config, used by routes.
        type: ``slack``, ``email``, ``pagerduty`` or ``webhook``.
        secrets: secret field (``url``, ``routing_key``, ``password``) -> where to read it.
        options: the other settings (email host/port/sender/to, PagerDuty events_url, ...).
        local_receiver: sends to the receivers of `lakehouse alerts listen` (env `local` only).
    """

    name: str
    type: str
    secrets: dict[str, SecretRef] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    local_receiver: bool = False


@dataclass(frozen=True)
class Route:
    """Alerts of these severities and sources (empty: any) go to `destinations`."""

    destinations: tuple[str, ...]
    severity: tuple[str, ...] = ()
    source: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retry:
    """Delivery attempts per destination; the waits between them double from `backoff_seconds`."""

    attempts: int = 3
    backoff_seconds: float = 0.5
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class AlertsConfig:
    """An environment's alerting settings.

    Attributes:
        env: the environment.
        destinations: name -> destination.
        routes: every matching route adds its destinations (see `routing.route`).
        suppress_window: repeats of an open incident within it are counted, not sent.
        wait_seconds: how long `send`/`resolve` wait for delivery before returning ``pending``.
        retry: attempts, backoff and per-attempt timeout.
        http_port, smtp_port: the local receivers' configured ports (receivers.json overrides).
    """

    env: str
    destinations: dict[str, Destination] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    suppress_window: timedelta = timedelta(minutes=60)
    wait_seconds: float = 20.0
    retry: Retry = field(default_factory=Retry)
    http_port: int = DEFAULT_HTTP_PORT
    smtp_port: int = DEFAULT_SMTP_PORT
    budgets: dict[str, float] = field(default_factory=dict)

    def budget_for(self, days: int) -> tuple[float, str] | None:
        """The spend allowed over `days` days, pro rata of the declared budget closest in length
        (``daily_usd`` 1, ``weekly_usd`` 7, ``monthly_usd`` 30 days), and how it was derived; None
        when no budget is declared."""
        if not self.budgets or days < 1:
            return None
        name = min(self.budgets, key=lambda b: abs(BUDGET_DAYS[b] - days))
        amount = self.budgets[name] * days / BUDGET_DAYS[name]
        how = f"{name} {self.budgets[name]:g}" + (
            f" x {days}/{BUDGET_DAYS[name]} days" if days != BUDGET_DAYS[name] else ""
        )
        return amount, how


# Spend budgets (`alerts.budgets`): name -> the days it covers.
BUDGET_DAYS = {"daily_usd": 1, "weekly_usd": 7, "monthly_usd": 30}


def alerts_home() -> Path:
    """Local alert state: LAKEHOUSE_HOME/alerts (receivers.json, received/)."""
    return lakehouse_home() / "alerts"


def receivers_file() -> Path:
    return alerts_home() / "receivers.json"


def receiver_ports(config: AlertsConfig) -> tuple[int, int]:
    """(http, smtp) ports of the local receivers: those a running `lakehouse alerts listen` wrote, else the config's."""
    try:
        data = json.loads(receivers_file().read_text())
        return int(data["http_port"]), int(data["smtp_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return config.http_port, config.smtp_port


def _number(
    problems: list[str], raw: dict[str, Any], key: str, default: float, *, low: float, high: float
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        problems.append(f"{key}: {value!r} is not a number from {low:g} to {high:g}")
        return default
    return float(value)


def _names(problems: list[str], where: str, value: Any, known: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        problems.append(f"{where}: {value!r} is not a list of names")
        return ()
    bad = [x for x in items if x not in known]
    if bad:
        problems.append(f"{where}: unknown {', '.join(map(repr, bad))}; use {', '.join(known)}")
    return tuple(x for x in items if x in known)


def _secret_ref(
    problems: list[str], where: str, raw: dict[str, Any], name: str, env: str
) -> SecretRef | None:
    env_key, secret_key = f"{name}_env", f"{name}_secret"
    spec = raw.get(secret_key)
    if name == MAIN_SECRET.get(str(raw.get("type"))) and "secret" in raw:
        if spec is not None:
            problems.append(f"{where}: both `secret` and `{secret_key}`; keep one")
        spec = raw["secret"]
    if name in raw:
        problems.append(
            f"{where}: `{name}` is a secret and must not be written in params; name an environment variable "
            f"(`{env_key}: VAR`) or a Databricks secret (`{secret_key}: {{scope, key}}`)"
        )
    var = raw.get(env_key)
    if var is not None and spec is not None:
        problems.append(f"{where}: both `{env_key}` and a secret scope for `{name}`; keep one")
        return None
    if var is not None:
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            problems.append(f"{where}.{env_key}: {var!r} is not an environment variable name")
            return None
        return SecretRef(env_var=var)
    if spec is not None:
        if env == "local":
            problems.append(f"{where}: secret scopes are read only outside `local`; use `{env_key}` locally")
            return None
        if not isinstance(spec, dict) or not all(
            isinstance(spec.get(k), str) and spec.get(k) for k in ("scope", "key")
        ):
            problems.append(
                f"{where}: the secret for `{name}` must be {{scope: NAME, key: NAME}}, not {spec!r}"
            )
            return None
        return SecretRef(scope=spec["scope"], key=spec["key"])
    return None


def _destination(problems: list[str], name: str, raw: Any, env: str) -> Destination | None:
    where = f"destinations.{name}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with a `type`, not {raw!r}")
        return None
    kind = raw.get("type")
    if kind not in TYPES:
        problems.append(f"{where}.type: {kind!r} is not one of {', '.join(TYPES)}")
        return None
    local_receiver = raw.get("local_receiver", False)
    if not isinstance(local_receiver, bool):
        problems.append(f"{where}.local_receiver: {local_receiver!r} is not true or false")
        local_receiver = False
    if local_receiver and env != "local":
        problems.append(f"{where}: `local_receiver` is for env local only; name the real {kind} endpoint")
    main = MAIN_SECRET[kind]
    known = {"type", "local_receiver", "secret"} | _PLAIN[kind] | {main, f"{main}_env", f"{main}_secret"}
    unknown = sorted(set(raw) - known)
    if unknown:
        problems.append(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    secrets: dict[str, SecretRef] = {}
    ref = _secret_ref(problems, where, raw, main, env)
    if ref:
        secrets[main] = ref
    elif kind != "email" and not local_receiver and not (kind == "pagerduty" and env == "local"):
        problems.append(
            f"{where}: needs `{main}_env` (an environment variable) or `{main}_secret: {{scope, key}}`"
        )
    options = {k: v for k, v in raw.items() if k in _PLAIN[kind]}
    if kind == "email":
        _check_email(problems, where, options, local_receiver)
    if kind == "pagerduty" and not isinstance(options.get("events_url", PAGERDUTY_EVENTS_URL), str):
        problems.append(f"{where}.events_url: {options['events_url']!r} is not a URL")
    if kind == "webhook" and not isinstance(options.get("headers", {}), dict):
        problems.append(f"{where}.headers: {options['headers']!r} is not a mapping")
    return Destination(name=name, type=kind, secrets=secrets, options=options, local_receiver=local_receiver)


def _check_email(problems: list[str], where: str, options: dict[str, Any], local_receiver: bool) -> None:
    """Problems of an SMTP destination's settings (`to` given as one address becomes a list)."""
    to = options.get("to")
    if isinstance(to, str):
        options["to"] = to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(x, str) and "@" in x for x in to):
        problems.append(f"{where}.to: {to!r} is not a list of e-mail addresses")
    if not isinstance(options.get("sender"), str) or "@" not in options.get("sender", ""):
        problems.append(f"{where}.sender: {options.get('sender')!r} is not an e-mail address")
    if not local_receiver and not isinstance(options.get("host"), str):
        problems.append(f"{where}.host: the SMTP server's host name is missing")
    port = options.get("port", 0 if local_receiver else 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        problems.append(f"{where}.port: {port!r} is not a port number")
    for flag in ("starttls", "ssl"):
        if not isinstance(options.get(flag, False), bool):
            problems.append(f"{where}.{flag}: {options[flag]!r} is not true or false")


def _routes(problems: list[str], raw: Any, destinations: dict[str, Any]) -> tuple[Route, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"routes: must be a list of {{severity, source, destinations}}, not {raw!r}")
        return ()
    routes = []
    for i, item in enumerate(raw):
        where = f"routes[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping, not {item!r}")
            continue
        unknown = sorted(set(item) - {"severity", "source", "destinations"})
        if unknown:
            problems.append(
                f"{where}: unknown setting(s) {', '.join(unknown)}; use severity, source, destinations"
            )
        dests = _names(problems, f"{where}.destinations", item.get("destinations"), tuple(destinations))
        if not item.get("destinations"):
            problems.append(f"{where}.destinations: name at least one destination")
        severity = _names(problems, f"{where}.severity", item.get("severity"), SEVERITIES)
        source = _names(problems, f"{where}.source", item.get("source"), SOURCES)
        routes.append(Route(destinations=dests, severity=severity, source=source))
    return tuple(routes)


def parse_config(raw: Any, env: str) -> AlertsConfig:
    """Validate an `alerts:` section.

    Raises:
        ConfigError: every problem, one per line.
    """
    problems: list[str] = []
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params/{env}.yaml `alerts` must be a mapping, not {raw!r}")
    known = {"destinations", "routes", "suppress_minutes", "wait_seconds", "retry", "receivers", "budgets"}
    unknown = sorted(set(raw) - known)
    if unknown:
        problems.append(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    raw_dests = raw.get("destinations") or {}
    if not isinstance(raw_dests, dict):
        problems.append(f"destinations: must be a mapping name -> {{type, ...}}, not {raw_dests!r}")
        raw_dests = {}
    destinations = {}
    for name, spec in raw_dests.items():
        dest = _destination(problems, str(name), spec, env)
        if dest:
            destinations[str(name)] = dest
    routes = _routes(problems, raw.get("routes"), raw_dests)
    retry_raw = raw.get("retry") or {}
    if not isinstance(retry_raw, dict):
        problems.append(f"retry: must be {{attempts, backoff_seconds, timeout_seconds}}, not {retry_raw!r}")
        retry_raw = {}
    attempts = retry_raw.get("attempts", 3)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        problems.append(f"retry.attempts: {attempts!r} is not a whole number from 1 to 10")
        attempts = 3
    retry = Retry(
        attempts=attempts,
        backoff_seconds=_number(problems, retry_raw, "backoff_seconds", 0.5, low=0, high=60),
        timeout_seconds=_number(problems, retry_raw, "timeout_seconds", 5.0, low=0.1, high=60),
    )
    receivers = raw.get("receivers") or {}
    ports = []
    for key, default in (("http_port", DEFAULT_HTTP_PORT), ("smtp_port", DEFAULT_SMTP_PORT)):
        port = receivers.get(key, default) if isinstance(receivers, dict) else default
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            problems.append(f"receivers.{key}: {port!r} is not a port number")
            port = default
        ports.append(port)
    budgets_raw = raw.get("budgets") or {}
    budgets: dict[str, float] = {}
    if not isinstance(budgets_raw, dict):
        problems.append(f"budgets: must be a mapping like {{weekly_usd: 50}}, not {budgets_raw!r}")
        budgets_raw = {}
    for name in budgets_raw:
        if name not in BUDGET_DAYS:
            problems.append(f"budgets.{name}: unknown budget; known: {', '.join(BUDGET_DAYS)}")
        else:
            budgets[name] = _number(problems, budgets_raw, name, 0.0, low=0, high=1e9)
    config = AlertsConfig(
        env=env,
        destinations=destinations,
        routes=routes,
        suppress_window=timedelta(
            minutes=_number(problems, raw, "suppress_minutes", 60, low=0, high=7 * 24 * 60)
        ),
        wait_seconds=_number(problems, raw, "wait_seconds", 20.0, low=0, high=600),
        retry=retry,
        http_port=ports[0],
        smtp_port=ports[1],
        budgets=budgets,
    )
    if problems:
        raise ConfigError(
            f"params/{env}.yaml `alerts` has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )
    return config


def load_config(env: str | None = None) -> AlertsConfig:
    """The `alerts:` section of an environment, validated.

    Raises:
        ConfigError: an unknown environment, or the section's problems, all at once.
    """
    settings = load_settings(env)
    return parse_config(settings.alerts, settings.env)
