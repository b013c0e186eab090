"""The quality notebook under nbmake judges a loaded lakehouse.

Run with the whole of ``pipeline_notebooks`` it comes after the ingestion and transformation notebooks
(see the root conftest's order) and finds their tables. Run alone (``pytest --nbmake
pipeline_notebooks/quality``), the lakehouse holds only generated sources, and a check of a table that
does not exist is an ERROR that fails the notebook, as it must in production: so the ingestion and
transformation jobs load the lakehouse first.
"""

from __future__ import annotations


def pytest_runtest_setup(item):
    if not getattr(item.config.option, "nbmake", False):
        return
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.jobs.runner import run_job

    settings = load_settings("local")
    built = [
        (engine.table_dir(t.full_name(settings), settings) / "_delta_log").is_dir()
        for t in registry()
        if t.layer in ("silver", "gold") and not t.name.endswith("_quarantine")
    ]
    if all(built):
        return
    for job in ("retail_ingestion", "retail_transformation"):
        run = run_job(job, env="local")
        assert run.state == "SUCCESS", f"{job} did not load the lakehouse for the quality notebook: {run.to_dict()}"
