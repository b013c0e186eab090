"""A throwaway copy of the project and commands run in it: where the `new_source` drill and the tests
onboard a source end to end without touching the real checkout or the real local lakehouse.

The copy (`<root>/project`) holds what a run needs (library, notebooks, params, bundle, DAGs); its
commands run in a child process whose `retail_lakehouse` is the copy's library (`PYTHONPATH`), whose
lakehouse home is the copy's own (`<root>/home`) and whose TMPDIR is private (its warm-kernel server
lives there and is stopped on `close`), with no engine or parameter folder inherited from this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.core.errors import LakehouseError

PARTS = ("lib", "pipeline_notebooks", "params", "airflow/dags", "databricks.yml", "pyproject.toml")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")
# Inherited settings that would point the child at this process's engine, kernels or parameters.
_DROP = ("SPARK_REMOTE", "LAKEHOUSE_PARAMS_DIR", "LAKEHOUSE_ENV", "PYTHONPATH")


class ProjectCopy:
    """A copy of the project under `root` (`project/`, `home/`); use as a context manager."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.project, self.home = self.root / "project", self.root / "home"
        if not (self.project / "databricks.yml").is_file():
            raise LakehouseError(f"{self.root} holds no project copy; make one with ProjectCopy.create")
        self._tmp: str | None = None

    @classmethod
    def create(cls, root: str | Path, source: str | Path | None = None) -> ProjectCopy:
        """Copy the project's runnable parts to `root/project` (new files, fresh modification times:
        the copy's library never matches a warm-kernel server of the original's, keyed by the library's
        newest mtime and file count).

        Raises:
            LakehouseError: `root` exists and is not empty.
        """
        src, root = Path(source or PROJECT_ROOT), Path(root)
        if root.exists() and any(root.iterdir()):
            raise LakehouseError(f"{root} is not empty; give a new folder for the project copy")
        for part in PARTS:
            origin, target = src / part, root / "project" / part
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=_IGNORE, copy_function=shutil.copy)
            elif origin.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, target)
        (root / "home").mkdir(parents=True, exist_ok=True)
        return cls(root)

    def env(self) -> dict[str, str]:
        """The child's environment."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="lh-")  # short: unix socket paths are at most 107 bytes
        env = {k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith("SAIL_")}
        env.update({"PYTHONPATH": str(self.project / "lib"), "LAKEHOUSE_HOME": str(self.home), "TMPDIR": self._tmp})
        return env

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """`lakehouse ARGS` in the copy (its library, its home); output captured, never raised on."""
        return subprocess.run(
            [sys.executable, "-m", "retail_lakehouse.cli", *args], cwd=self.project, env=self.env(),
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def query(self, statement: str, timeout: float = 600) -> list[dict]:
        """Rows of one SQL statement on the copy's local lakehouse, as dicts (JSON-friendly values).

        Raises:
            LakehouseError: the statement failed (its last error line).
        """
        return self.queries([statement], timeout=timeout)[0]

    def queries(self, statements: list[str], timeout: float = 600) -> list[list[dict]]:
        """The rows of each statement, run in one child process (one engine start)."""
        code = ("import json,sys\nfrom retail_lakehouse import engine\n"
                "out=[[r.asDict() for r in engine.sql(s, env='local').collect()] for s in json.loads(sys.argv[1])]\n"
                "print(json.dumps(out, default=str))")
        done = subprocess.run([sys.executable, "-c", code, json.dumps(statements)], cwd=self.project,
                              env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode:
            raise LakehouseError(f"query in the project copy failed: {done.stderr.strip().splitlines()[-1:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        """Stop the warm-kernel servers the copy's runs started (only theirs) and drop the private TMPDIR."""
        if self._tmp is not None:
            self.cli("kernels", "stop", timeout=120)
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> ProjectCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
