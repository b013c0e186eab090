"""Shared fixtures: every test session gets its own LAKEHOUSE_HOME and one embedded engine."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="lakehouse-test-"))
os.environ["LAKEHOUSE_HOME"] = str(_HOME)
os.environ.pop("SPARK_REMOTE", None)
os.environ.setdefault("LAKEHOUSE_ENV", "local")


@pytest.fixture(scope="session")
def lakehouse_home() -> Path:
    return _HOME


@pytest.fixture
def spark():
    """The engine's session (function scope: a module may restart the engine with its own home)."""
    from retail_lakehouse import engine

    return engine.get_spark("local")


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    from retail_lakehouse import engine

    engine.stop_local_server()
    shutil.rmtree(_HOME, ignore_errors=True)
