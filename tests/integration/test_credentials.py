"""A Databricks environment without credentials: one `error:` line saying what to configure, no traceback.

Every test runs with HOME at an empty folder (no `~/.databrickscfg`) and no DATABRICKS_* variable, so
the SDK fails at once, without a network request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FAKE_TOKEN = "dapi-fake-0123456789abcdef"  # noqa: S105 - a made-up value that must never be printed
FAKE_FILE_TOKEN = "dapi-fake-from-file-fedcba9876543210"  # noqa: S105


def _profile(env: str) -> str:
    from retail_lakehouse.core.config import load_settings

    return str(load_settings(env).databricks["profile"])


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """The process environment with an empty HOME, its own LAKEHOUSE_HOME and no DATABRICKS_* variable."""
    home, lakehouse = tmp_path / "home", tmp_path / "lakehouse"
    home.mkdir()
    lakehouse.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    env.update(HOME=str(home), LAKEHOUSE_HOME=str(lakehouse))
    return env


def _lakehouse(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "retail_lakehouse.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args", [["--env", "dev", "--dry-run"], ["--env", "qa", "--dry-run"], ["--env", "dev"]], ids=" ".join
)
def test_deploy_without_credentials_is_one_error_line(bare_env, args):
    env = args[1]
    proc = _lakehouse(["deploy", *args], bare_env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    message = lines[0]
    assert message.startswith("error: ")
    assert f"env {env!r}" in message
    assert _profile(env) in message
    assert "~/.databrickscfg" in message
    assert "databricks auth login" in message
    assert "DATABRICKS_HOST" in message and "DATABRICKS_TOKEN" in message


def test_no_secret_in_the_message(bare_env, tmp_path):
    """A token without a host (in the environment and in the profile) is not enough, and is not shown."""
    (tmp_path / "home" / ".databrickscfg").write_text(f"[{_profile('dev')}]\ntoken = {FAKE_FILE_TOKEN}\n")
    proc = _lakehouse(["deploy", "--env", "dev", "--dry-run"], {**bare_env, "DATABRICKS_TOKEN": FAKE_TOKEN})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for secret in (FAKE_TOKEN, FAKE_FILE_TOKEN):
        assert secret not in proc.stderr + proc.stdout


def test_connect_raises_credentials_error(bare_env, monkeypatch):
    from retail_lakehouse.core.errors import ConfigError, CredentialsError
    from retail_lakehouse.databricks.workspace import connect

    for key in [k for k in os.environ if k.startswith("DATABRICKS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", bare_env["HOME"])
    with pytest.raises(CredentialsError) as info:
        connect("dev")
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert _profile("dev") in message and "DATABRICKS_HOST" in message and "\n" not in message
    assert info.value.__suppress_context__  # raised `from None`: the SDK's chained ValueErrors stay out


def test_a_missing_profile_is_named(bare_env, monkeypatch):
    """A ~/.databrickscfg without the environment's profile: the SDK's reason is in the message."""
    from retail_lakehouse.core.errors import CredentialsError
    from retail_lakehouse.databricks.workspace import connect

    for key in [k for k in os.environ if k.startswith("DATABRICKS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", bare_env["HOME"])
    cfg = Path(bare_env["HOME"]) / ".databrickscfg"
    cfg.write_text(f"[someone-else]\nhost = https://example.invalid\ntoken = {FAKE_FILE_TOKEN}\n")
    with pytest.raises(CredentialsError, match=f"has no {_profile('qa')} profile") as info:
        connect("qa")
    assert FAKE_FILE_TOKEN not in str(info.value)
