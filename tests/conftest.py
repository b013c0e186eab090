"""Shared fixtures: every test session gets its own LAKEHOUSE_HOME and one embedded engine."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.fixture(scope="module")
def isolated_home(tmp_path_factory):
    """A module of its own: a fresh LAKEHOUSE_HOME and a fresh engine, restored afterwards."""
    from retail_lakehouse import engine

    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("lakehouse")
    engine.stop_local_server()
    mp.setenv("LAKEHOUSE_HOME", str(path))
    mp.delenv("SPARK_REMOTE", raising=False)
    yield path
    engine.stop_local_server()
    mp.undo()


def generate_sources(home: Path, *, days: int = 3, scale_factor: float = 0.05, **kwargs):
    """Generate the source systems into a home laid out as params/local.yaml says."""
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.sandbox.generate import generate

    settings = load_settings("local")
    return generate(
        home,
        scale_factor=scale_factor,
        days=days,
        oltp_path=settings.sqlite_path(),
        landing_dir=settings.local_path("landing"),
        **kwargs,
    )


def epoll_descriptors() -> int:
    """Open descriptors of this process that are epoll instances (one per asyncio event loop)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += "eventpoll" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
    return count


@contextmanager
def gc_paused() -> Iterator[None]:
    """Garbage collection off inside the block (collected first): an event loop left open would
    otherwise be closed whenever a collection happens to run, and a leak test would pass by chance."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
