"""A demo lakehouse for the ops tests: generated sources, the daily job, a shared engine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.conftest import generate_sources


@pytest.fixture(scope="session")
def demo_lakehouse() -> Path:
    """The demo lakehouse (shared by the ops tests: each drill must leave it healthy)."""
    from retail_lakehouse import engine
    from retail_lakehouse.jobs.runner import run_job

    home = Path(tempfile.mkdtemp(prefix="lakehouse-ops-"))
    engine.stop_local_server()
    os.environ["LAKEHOUSE_HOME"] = str(home)
    os.environ.pop("SPARK_REMOTE", None)
    generate_sources(home, days=4, scale_factor=0.05)
    assert run_job("retail_daily", env="local").state == "SUCCESS"
    engine.start_local_server()  # kernels started by papermill share this engine (SPARK_REMOTE)
    return home
