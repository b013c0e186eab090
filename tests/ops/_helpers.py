"""Shared by the ops notebook tests: run a notebook with papermill, read its text, read the audit."""

from __future__ import annotations

import json
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[2]


def run_notebook(name: str, tmp_path: Path, **parameters) -> str:
    """Execute ops_notebooks/<name>.ipynb and return all its text outputs joined."""
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(ROOT / "ops_notebooks" / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(ROOT), progress_bar=False)  # the notebook's own kernel: lakehouse-warm
    return notebook_text(out)


def notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            parts.append("".join((o.get("data") or {}).get("text/plain", "")))
            parts.append(o.get("evalue", ""))
    return "\n".join(parts)


def audit_rows(notebook: str):
    from retail_lakehouse.databricks.workspace import connect
    from retail_lakehouse.ops._delta import sql

    w = connect("local")
    return sql(w, "SELECT * FROM retail_datalake.local_monitoring.ops_audit WHERE notebook = :n ORDER BY started_at",
               {"n": notebook}, env="local")
