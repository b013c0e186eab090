"""Every ops notebook: its `parameters` cell is the single declaration its module's spec reads
(`core.params.Parameters`); the audit row records what the notebooks recorded before the spec."""

from __future__ import annotations

import datetime as dt
import importlib

import nbformat
import papermill
import pytest

from retail_lakehouse.core.errors import ParameterError
from tests.ops._helpers import ROOT

NOTEBOOKS = sorted(p.stem for p in (ROOT / "ops_notebooks").glob("*.ipynb"))
TODAY = dt.datetime.now(dt.UTC).date()
BASE = {"env": "local", "ops_run_id": "manual"}
# What each notebook's audit row records for its defaults (as the notebooks built it by hand before).
DEFAULT_AUDIT = {
    "alerts_review": {**BASE, "key": "", "limit": 20},
    "backfill": {**BASE, "table": "silver.orders", "start_date": dt.date(2024, 1, 1), "end_date": dt.date(2024, 1, 2),
                 "layers": ["silver", "gold"], "check_quality": True, "dry_run": True, "confirm": False},
    "cost_review": {**BASE, "start_date": TODAY - dt.timedelta(days=29), "end_date": TODAY, "include_storage": True},
    "data_freshness": {**BASE, "as_of": None, "fail_on_stale": False},
    "diagnose_oom": {**BASE, "job_run_id": "", "job": ""},
    "diagnose_slow_query": {**BASE, "table": "gold.fact_sales", "query_id": "", "action": "none", "dry_run": True,
                            "confirm": False},
    "diagnose_streaming_lag": {**BASE, "stream": "pos_events", "max_files_per_trigger": 0, "last_runs": 3},
    "job_failure_triage": {**BASE, "job_run_id": "", "job": "", "dag_id": "", "dag_run_id": "", "action": "none",
                           "dry_run": True, "confirm": False},
    "onboard_source": {**BASE, "name": "returns", "jdbc_table": "returns", "landing": "", "key": "", "watermark": "",
                       "project_dir": "", "dry_run": True},
    "optimize": {**BASE, "table": "gold.fact_sales", "where": "", "zorder_by": [], "vacuum": False,
                 "retention_hours": 168, "dry_run": True, "confirm": False},
    "quality_failure_triage": {**BASE, "table": "silver.orders", "date": None, "action": "none", "dry_run": True,
                               "confirm": False},
    "rebuild_from_source": {**BASE, "table": "gold.fact_sales", "dry_run": True, "confirm": False},
    "restore": {**BASE, "table": "gold.fact_sales", "version": "latest-1", "dry_run": True, "confirm": False,
                "reprocess_downstream": False},
    "schema_evolution": {**BASE, "table": "silver.orders", "dry_run": True, "confirm": False},
}


def namespace(notebook: str, **overrides) -> dict:
    """The notebook's globals after its parameters cell ran (and papermill injected `overrides`)."""
    nb = nbformat.read(ROOT / "ops_notebooks" / f"{notebook}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    ns: dict = {}
    exec(cell.source, ns)  # noqa: S102 - the repository's own parameters cell
    ns.update(overrides)
    return ns


def spec(notebook: str):
    return importlib.import_module(f"retail_lakehouse.ops.{notebook}").PARAMETERS


def test_every_ops_notebook_is_covered():
    assert sorted(DEFAULT_AUDIT) == NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_parameters_cell_drives_validation_form_and_audit(notebook):
    declared = papermill.inspect_notebook(str(ROOT / "ops_notebooks" / f"{notebook}.ipynb"))
    ns = namespace(notebook)
    params = spec(notebook).read(ns)
    assert list(params) == list(declared)  # every parameter of the cell, in its order
    assert list(spec(notebook).form_spec(ns)) == list(declared)
    assert params.audit == DEFAULT_AUDIT[notebook]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_notebook_only_wires_its_parameters(notebook):
    nb = nbformat.read(ROOT / "ops_notebooks" / f"{notebook}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    source = "\n".join(code)
    assert ".PARAMETERS.form(globals())" in code[0]  # the form right after the parameters cell
    assert ".PARAMETERS.read(globals())" in source and "parameters=params.audit" in source
    assert "RuntimeError" not in source and "param(\"" not in source


def test_papermill_values_are_converted_like_the_command_line_gives_them():
    params = spec("backfill").read(namespace("backfill", table="gold.fact_sales", layers="gold", dry_run="False",
                                             start_date="2024-01-03", end_date="2024-01-04"))
    assert params.table.ref == "gold.fact_sales" and params.layers == ["gold"] and params.dry_run is False
    assert params.audit["start_date"] == dt.date(2024, 1, 3)


def test_procedure_checks_run_on_read():
    with pytest.raises(ParameterError, match="168"):
        spec("optimize").read(namespace("optimize", retention_hours=24))
    with pytest.raises(ParameterError, match="zorder_by"):
        spec("optimize").read(namespace("optimize", zorder_by="date_key"))
    p = spec("optimize").read(namespace("optimize", where="date_key>20231231  AND date_key <= 20240105"))
    assert p.where == ["date_key > 20231231", "date_key <= 20240105"]
    assert p.audit["where"] == "date_key > 20231231 AND date_key <= 20240105"
    with pytest.raises(ParameterError, match="before the start"):
        spec("cost_review").read(namespace("cost_review", start_date="2024-02-01", end_date="2024-01-01"))
    assert spec("cost_review").read(namespace("cost_review", end_date="2024-01-31")).audit["start_date"] == dt.date(2024, 1, 2)
    with pytest.raises(ParameterError, match="not a silver table built by rules"):
        spec("schema_evolution").read(namespace("schema_evolution", table="orders_quarantine"))
    with pytest.raises(ParameterError, match="is not rebuilt by"):
        spec("rebuild_from_source").read(namespace("rebuild_from_source", table="bronze.pos_events"))
    with pytest.raises(ParameterError, match="action"):
        spec("job_failure_triage").read(namespace("job_failure_triage", action="rerun-everything"))
    with pytest.raises(ParameterError, match="stream"):
        spec("diagnose_streaming_lag").read(namespace("diagnose_streaming_lag", stream="x; DROP TABLE y"))


def test_a_query_id_replaces_the_table():
    dsq = spec("diagnose_slow_query")
    p = dsq.read(namespace("diagnose_slow_query", table="not a table", query_id="01ef-abc"))
    assert p.table is None and p.audit == {**BASE, "table": None, "query_id": "01ef-abc", "action": "none",
                                           "dry_run": True, "confirm": False}
    with pytest.raises(ParameterError, match="query id"):
        dsq.read(namespace("diagnose_slow_query", query_id="1; DROP TABLE x"))
    with pytest.raises(ParameterError, match="table"):
        dsq.read(namespace("diagnose_slow_query", table="orders_typo"))




@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_last_cell_prints_the_summary(notebook):
    """The verdict is the notebook's last output: a cell tagged `summary` that only calls the module."""
    nb = nbformat.read(ROOT / "ops_notebooks" / f"{notebook}.ipynb", as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "code" and "summary" in last.metadata.get("tags", [])
    assert ".summary_of(" in last.source and ".show()" in last.source.splitlines()[0]
    assert hasattr(importlib.import_module(f"retail_lakehouse.ops.{notebook}"), "summary_of")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_run_ids_say_what_they_are(notebook):
    """`ops_run_id` is this ops run (the audit row); `job_run_id` the failed Databricks run; no bare run_id."""
    declared = papermill.inspect_notebook(str(ROOT / "ops_notebooks" / f"{notebook}.ipynb"))
    assert "ops_run_id" in declared and "run_id" not in declared
    if notebook in ("job_failure_triage", "diagnose_oom"):
        assert "job_run_id" in declared
