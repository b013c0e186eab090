"""An ops notebook run with `-p env dev` from a laptop that has only the SDK configured.

The "dev workspace" here is the local workspace started as its own process; the notebook finds it
through the SDK's standard chain alone (DATABRICKS_CONFIG_FILE + DATABRICKS_CONFIG_PROFILE), as an
engineer's laptop would find a real one. No token is a parameter or appears in the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parents[2]


def test_ops_notebook_runs_against_a_workspace_found_by_the_sdk_chain(tmp_path):
    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path)}
    env.pop("SPARK_REMOTE", None)
    lakehouse = [sys.executable, "-m", "retail_lakehouse.cli"]
    subprocess.run([*lakehouse, "workspace", "start"], env=env, check=True, capture_output=True, text=True)
    try:
        profile_file = tmp_path / "workspace" / "databrickscfg"
        token = (tmp_path / "workspace" / ".token").read_text().strip()
        kernel_env = {
            "DATABRICKS_CONFIG_FILE": str(profile_file),
            "DATABRICKS_CONFIG_PROFILE": "local",
            "LAKEHOUSE_HOME": str(tmp_path),
        }
        saved = {k: os.environ.get(k) for k in [*kernel_env, "SPARK_REMOTE"]}
        os.environ.update(kernel_env)
        os.environ.pop("SPARK_REMOTE", None)
        try:
            out = tmp_path / "cost_dev.ipynb"
            papermill.execute_notebook(
                str(ROOT / "ops_notebooks" / "cost_review.ipynb"),
                str(out),
                parameters={"env": "dev", "include_storage": False},
                kernel_name="python3",
                progress_bar=False,
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        text = json.dumps(nbformat.read(out, as_version=4))
        assert token not in text
        assert "DIAGNOSIS:" in text
    finally:
        subprocess.run([*lakehouse, "workspace", "stop"], env=env, capture_output=True, text=True)
