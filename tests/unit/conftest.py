"""Unit-test fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def spark():
    """The embedded engine's session, for in-memory frames (the shared test LAKEHOUSE_HOME; nothing written).

    A module with an engine of its own (test_gold, test_quality) stops it on teardown, and its
    MonkeyPatch then restores the SPARK_REMOTE it found, which may name the server it just stopped:
    a session on that URL retries for minutes. Only the engine of this process sets SPARK_REMOTE in
    tests (tests/conftest.py removes any other), so a URL that is not the running server's is stale
    and dropped: the engine then starts afresh.
    """
    from retail_lakehouse import engine

    remote = os.environ.get("SPARK_REMOTE")
    if remote and remote != getattr(engine, "_server_url", None):
        del os.environ["SPARK_REMOTE"]
    return engine.get_spark("local")
