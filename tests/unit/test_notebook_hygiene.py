"""Source notebooks: one parameters cell that papermill can read, no outputs, wired to the library."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from retail_lakehouse.databricks.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "pipeline_notebooks").rglob("*.ipynb")) + sorted((ROOT / "ops_notebooks").rglob("*.ipynb"))


def test_there_are_pipeline_notebooks():
    assert len([p for p in NOTEBOOKS if "pipeline_notebooks" in str(p)]) >= 19


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_clean_and_parameterized(path, caplog):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    assert not any(c.outputs or c.execution_count for c in code), "source notebooks are committed without outputs"
    with caplog.at_level("WARNING"):
        declared = papermill.inspect_notebook(str(path))
    assert "Unable to parse" not in caplog.text, caplog.text
    assert "env" in declared and ({"run_id", "ops_run_id"} & set(declared))  # ops notebooks: ops_run_id
    for name, spec in declared.items():
        assert spec["help"], f"parameter {name} needs a comment saying what it is"
        assert spec["inferred_type_name"] != "None", f"parameter {name} needs a type annotation"
    source = "\n".join(c.source for c in code)
    wired = "param(" in source.replace("# each parameter above through param()", "") or ".PARAMETERS.read(" in source
    assert "retail_lakehouse" in source and wired, "notebooks wire parameters to the library (param or PARAMETERS)"
    assert str(ROOT) not in "".join(c.source for c in nb.cells), "no absolute paths of this machine"


def test_every_job_task_points_at_an_existing_notebook():
    bundle = load_bundle(ROOT / "databricks.yml", target="local")
    assert {"retail_ingestion", "retail_transformation", "retail_data_quality_checks", "retail_daily"} <= set(bundle.jobs)
    used = {t.notebook_path for job in bundle.jobs.values() for t in job.tasks if t.notebook_path}
    pipeline = {p for p in NOTEBOOKS if "pipeline_notebooks" in str(p)}
    assert pipeline <= used, f"notebooks no job runs: {sorted(map(str, pipeline - used))}"
