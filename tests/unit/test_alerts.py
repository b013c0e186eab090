"""Alerts, the pure parts: routing, dedup/suppression, backoff, config validation, payloads, redaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from retail_lakehouse.alerts import Alert, Delivery
from retail_lakehouse.alerts.channels import (
    Notification,
    email_message,
    pagerduty_payload,
    slack_payload,
    webhook_payload,
)
from retail_lakehouse.alerts.config import Route, parse_config
from retail_lakehouse.alerts.model import row_status
from retail_lakehouse.alerts.routing import OpenIncident, backoff_delays, decide, route
from retail_lakehouse.alerts.secrets import Redactor
from retail_lakehouse.core.errors import ConfigError, ParameterError

PARAMS = Path(__file__).resolve().parents[2] / "params"
NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)

ROUTES = (
    Route(destinations=("pagerduty", "slack"), severity=("critical",)),
    Route(destinations=("slack", "email"), severity=("critical", "error")),
    Route(destinations=("email",), source=("cost",)),
    Route(destinations=("webhook",), severity=("warning",), source=("freshness", "stream_lag")),
)


def alert(severity="error", source="job", key="job:retail_daily") -> Alert:
    return Alert(key=key, severity=severity, source=source, summary="retail_daily failed", link="http://run/1",
                 runbook="http://book/job_failure_triage", command="papermill ops_notebooks/x.ipynb out.ipynb")  # fmt: skip


@pytest.mark.parametrize(
    ("severity", "source", "expected"),
    [
        ("critical", "job", ["pagerduty", "slack", "email"]),
        ("error", "quality", ["slack", "email"]),
        ("warning", "freshness", ["webhook"]),
        ("warning", "job", []),
        ("info", "cost", ["email"]),
        ("critical", "cost", ["pagerduty", "slack", "email"]),
    ],
)
def test_every_matching_route_adds_its_destinations_once_in_order(severity, source, expected):
    assert route(alert(severity, source), ROUTES) == expected


def test_no_route_means_no_destination():
    assert route(alert(), ()) == []


def test_a_new_key_is_notified():
    assert decide(None, NOW, timedelta(minutes=60)) == "notify"


def test_a_repeat_within_the_window_is_suppressed_and_after_it_notified_again():
    opened = OpenIncident("a1", NOW - timedelta(minutes=59), suppressed_count=3)
    assert decide(opened, NOW, timedelta(minutes=60)) == "suppress"
    assert decide(opened, NOW + timedelta(minutes=1), timedelta(minutes=60)) == "notify"
    assert decide(opened, NOW, timedelta(0)) == "notify"


def test_backoff_doubles_and_is_bounded_by_attempts():
    assert backoff_delays(3, 0.5) == [0.5, 1.0]
    assert backoff_delays(4, 0.5) == [0.5, 1.0, 2.0]
    assert backoff_delays(1, 0.5) == []


def test_row_status():
    ok, bad = Delivery("slack", "DELIVERED", 1), Delivery("email", "FAILED", 3)
    assert row_status([ok]) == "DELIVERED"
    assert row_status([ok, bad]) == "PARTIAL"
    assert row_status([bad]) == "FAILED"
    assert row_status([]) == "NO_DESTINATION"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("severity", {"severity": "fatal"}), ("source", {"source": "airflow"}), ("key", {"key": ""}),
     ("key", {"key": "has space"}), ("summary", {"summary": " "})],
)  # fmt: skip
def test_a_bad_alert_is_refused_at_construction(field, kwargs):
    base = {"key": "k", "severity": "error", "source": "job", "summary": "s"}
    with pytest.raises(ParameterError) as err:
        Alert(**{**base, **kwargs})
    assert err.value.name == field


@pytest.mark.parametrize("env", ["local", "dev", "qa", "prod"])
def test_the_committed_params_files_are_valid(env):
    raw = yaml.safe_load((PARAMS / f"{env}.yaml").read_text())
    config = parse_config(raw["alerts"], env)
    assert set(config.destinations) == {"slack", "pagerduty", "webhook", "email"}
    assert config.suppress_window == timedelta(minutes=60)
    # locally a refused connection is retried quickly (0.2 s, 0.4 s): receivers down cost < 1 s per alert
    assert (config.retry.attempts, config.retry.backoff_seconds) == (3, 0.2 if env == "local" else 0.5)
    assert route(alert("critical"), config.routes)


def test_a_malformed_config_names_every_problem_at_once():
    raw = {
        "suppress_minutes": -5,
        "retry": {"attempts": 0},
        "colour": "red",
        "destinations": {
            "slack": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/XYZ"},
            "teams": {"type": "teams"},
            "pd": {"type": "pagerduty"},
            "mail": {"type": "email", "to": "nobody", "password": "hunter22"},
            "hook": {"type": "webhook", "url_env": "not a name", "local_receiver": True},
            "scoped": {"type": "webhook", "secret": {"scope": "s"}},
        },
        "routes": [{"severity": ["fatal"], "destinations": ["slack", "nowhere"]}, {"source": ["job"]}],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "prod")
    text = str(err.value)
    for expected in [
        "suppress_minutes", "retry.attempts", "unknown setting(s) colour", "destinations.slack: `url` is a secret",
        "destinations.teams.type", "destinations.pd: needs `routing_key_env`", "destinations.mail.to",
        "destinations.mail.sender", "destinations.mail.host", "destinations.mail: `password` is a secret",
        "destinations.hook.url_env", "destinations.hook: `local_receiver` is for env local only",
        "destinations.scoped: the secret for `url` must be {scope: NAME, key: NAME}", "routes[0].destinations: unknown 'nowhere'",
        "routes[0].severity: unknown 'fatal'", "routes[1].destinations: name at least one",
    ]:  # fmt: skip
        assert expected in text, expected
    assert "problem(s)" in text and text.count("\n  - ") >= 16
    # the secret values written by mistake are not echoed back
    assert "XYZ" not in text and "hunter22" not in text


def test_secret_scopes_are_not_read_locally():
    raw = {"destinations": {"s": {"type": "slack", "url_secret": {"scope": "retail-dev", "key": "slack"}}}}
    with pytest.raises(ConfigError, match="secret scopes are read only outside `local`"):
        parse_config(raw, "local")
    assert parse_config(raw, "dev").destinations["s"].secrets["url"].scope == "retail-dev"


def test_slack_message_is_block_kit_with_a_fallback_text():
    body = slack_payload(Notification("trigger", alert("critical"), "prod", "id1"))
    assert body["text"].startswith(":rotating_light: CRITICAL [prod] retail_daily failed")
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "context", "section"]
    assert "papermill ops_notebooks/x.ipynb" in body["blocks"][-1]["text"]["text"]
    assert "<http://book/job_failure_triage|Runbook>" in body["blocks"][3]["elements"][0]["text"]
    resolved = slack_payload(Notification("resolve", alert("critical"), "prod", "id1"))
    assert resolved["blocks"][0]["text"]["text"].startswith("RESOLVED")


def test_pagerduty_trigger_and_resolve_share_the_dedup_key():
    trigger = pagerduty_payload(Notification("trigger", alert("critical"), "prod", "id1"), "RK")
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "job:retail_daily"
    assert (
        trigger["payload"]["severity"] == "critical"
        and trigger["payload"]["summary"] == "[prod] retail_daily failed"
    )
    assert trigger["links"][0] == {"href": "http://run/1", "text": "Run"}
    resolve = pagerduty_payload(Notification("resolve", alert("critical"), "prod", "id1"), "RK")
    assert resolve == {"routing_key": "RK", "event_action": "resolve", "dedup_key": "job:retail_daily"}


def test_webhook_and_email_carry_the_fields():
    n = Notification("trigger", alert(), "qa", "id1", suppressed_count=2)
    assert webhook_payload(n)["key"] == "job:retail_daily" and webhook_payload(n)["suppressed_count"] == 2
    msg = email_message(n, "lakehouse@x.example", ["oncall@x.example"])
    assert msg["Subject"] == "ERROR [qa] retail_daily failed" and msg["To"] == "oncall@x.example"
    assert "papermill ops_notebooks/x.ipynb" in msg.get_content()


def test_the_redactor_masks_secret_values_and_url_paths():
    redact = Redactor()
    redact.add("https://hooks.slack.com/services/T000/B000/abcdefSECRET")
    redact.add("routing-key-123456")
    text = redact(
        "POST https://hooks.slack.com/services/T000/B000/abcdefSECRET failed; key routing-key-123456"
    )
    assert "abcdefSECRET" not in text and "routing-key-123456" not in text and "***" in text
    assert redact("/services/T000/B000/abcdefSECRET") == "***"
    assert "value(s)" in repr(redact) and "SECRET" not in repr(redact)


def test_papermill_command_of_a_procedure():
    from retail_lakehouse.alerts import papermill_command

    assert papermill_command("job_failure_triage", env="prod", job_run_id=42) == (
        "papermill ops_notebooks/job_failure_triage.ipynb out.ipynb -p env prod -p job_run_id 42"
    )
    assert papermill_command("data_freshness", as_of="2024-01-05", note="a b").endswith("-p note 'a b'")
