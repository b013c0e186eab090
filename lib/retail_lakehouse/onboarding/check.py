"""`lakehouse onboard --check`: every source is wired the same way through the project.

For each bronze table with a `source_system`: its ingestion notebook exists, names the table and is a
task of `retail_ingestion`. For each silver table with a rule set: the rule set reads a registered
bronze table and produces exactly the registry's silver columns, the quarantine table is derived, the
clean notebook exists, names the table and is a task of `retail_transformation` that runs after the
clean tasks of the tables its foreign keys reference; its quality checks hold the key not null and
unique. Every bronze source feeds a silver table (lineage), every gold lineage entry names registered
tables, every pipeline notebook is a task, and the Airflow DAGs trigger the jobs that run them.
Reads the project's files (default: this checkout), not the imported package, so a copy can be checked.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from retail_lakehouse.core.config import PROJECT_ROOT, load_yaml
from retail_lakehouse.core.errors import LakehouseError
from retail_lakehouse.core.tables import load_registry
from retail_lakehouse.onboarding.render import INGEST_JOB, TRANSFORM_JOB

QUALITY_JOB = "retail_data_quality_checks"
_SOURCE_NOTEBOOKS = {"store_oltp": "ingestion/batch", "landing": "ingestion/streaming", "pos": "ingestion/streaming"}
_META = {"_run_id", "_processed_at"}


def _notebook_code(path: Path) -> str:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c.get("source", "")) for c in doc.get("cells", []) if c.get("cell_type") == "code")


def _silver_of(bronze: str) -> str:
    return "pos_transactions" if bronze == "pos_events" else bronze


def _tasks(bundle, job: str) -> dict[str, object]:
    spec = bundle.jobs.get(job)
    return {} if spec is None else {t.task_key: t for t in spec.tasks}


def _dag_jobs(root: Path) -> set[str]:
    jobs = set()
    for dag in sorted((root / "airflow" / "dags").glob("*.py")):
        for node in ast.walk(ast.parse(dag.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "JOB" for t in node.targets)
                    and isinstance(node.value, ast.Constant)):
                jobs.add(str(node.value.value))
    return jobs


def _gold_sources(root: Path) -> dict[str, tuple[str, ...]]:
    """`SOURCES` of pipeline/gold.py, read as a literal (the gold lineage)."""
    tree = ast.parse((root / "lib/retail_lakehouse/pipeline/gold.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "SOURCES":
            return ast.literal_eval(node.value)
    return {}


def _check_rule_set(name: str, path: Path, ctx: dict) -> list[str]:
    """The problems of one silver table built by a rule set."""
    from retail_lakehouse.pipeline.silver import parse_rule_set

    root, refs, where = ctx["root"], ctx["refs"], f"silver.{name}"
    try:
        rules = parse_rule_set(load_yaml(path.read_text(encoding="utf-8")), f"rules/{name}.yaml")
    except LakehouseError as exc:
        return [f"{where}: {exc}"]
    ctx["fed"].add(rules.source)
    silver, bronze = refs.get(where), refs.get(rules.source)
    if silver is None:
        return [f"{where}: rules/{name}.yaml has no silver entry in schema_definitions.yaml"]
    problems = []
    if bronze is None or bronze.layer != "bronze":
        problems.append(f"{where}: rules/{name}.yaml reads {rules.source}, not a registered bronze table")
    if set(rules.columns) != set(silver.columns) - _META:
        diff = sorted(set(rules.columns) ^ (set(silver.columns) - _META))
        problems.append(f"{where}: rules/{name}.yaml columns differ from the registry's silver columns: {diff}")
    if f"silver.{name}_quarantine" not in refs:
        problems.append(f"{where}: no quarantine table derived (its bronze table must be bronze.{name})")
    notebook = root / "pipeline_notebooks/transformation/bronze_to_silver" / f"clean_{name}.ipynb"
    if not notebook.is_file():
        problems.append(f"{where}: no notebook {notebook.relative_to(root)}")
    elif f'clean_table("{name}"' not in _notebook_code(notebook):
        problems.append(f"{where}: {notebook.relative_to(root)} does not call clean_table(\"{name}\")")
    task = ctx["transform"].get(f"clean_{name}")
    if task is None or Path(task.notebook_path or "").resolve() != notebook.resolve():
        problems.append(f"{where}: databricks.yml job {TRANSFORM_JOB} has no task clean_{name} running {notebook.name}")
    else:
        for rule in rules.rules:
            ref = rule.foreign_key["references"].split(".")[1] if rule.foreign_key else None
            if ref and ref in ctx["rule_sets"] and ref != name and f"clean_{ref}" not in task.depends_on:
                problems.append(f"{where}: task clean_{name} must depend on clean_{ref} (rule {rule.name})")
    return problems + _check_quality(name, silver, ctx)


def _check_quality(name: str, silver, ctx: dict) -> list[str]:
    checks_file = ctx["lib"] / "pipeline" / "checks" / f"silver_{name}.yaml"
    if not checks_file.is_file():
        return [f"silver.{name}: no quality checks checks/silver_{name}.yaml"]
    checks = load_yaml(checks_file.read_text(encoding="utf-8")) or {}
    kinds = {(c.get("check"), tuple((c.get("arguments") or {}).get("columns") or ())) for c in checks.get("checks") or []}
    return [f"silver.{name}: checks/silver_{name}.yaml lacks a {kind} check on the key {list(silver.keys)}"
            for kind in ("not_null", "unique") if (kind, tuple(silver.keys)) not in kinds]


def _check_bronze(t, ctx: dict) -> list[str]:
    root, where = ctx["root"], f"bronze.{t.name}"
    if not t.source_system:
        return [f"{where}: no source_system in schema_definitions.yaml"]
    problems = []
    if t.ref not in ctx["fed"]:
        problems.append(f"{where}: no silver rule set reads it (lineage: rules/<table>.yaml source)")
    if t.source_system == "store_oltp" and not t.watermark:
        problems.append(f"{where}: a store_oltp source needs a watermark column")
    key = f"ingest_{t.name}"
    notebook = root / "pipeline_notebooks" / _SOURCE_NOTEBOOKS.get(t.source_system, "ingestion") / f"{key}.ipynb"
    if not notebook.is_file():
        problems.append(f"{where}: no notebook {notebook.relative_to(root)}")
    elif t.source_system != "pos" and f'("{t.name}"' not in _notebook_code(notebook):
        problems.append(f"{where}: {notebook.relative_to(root)} does not ingest \"{t.name}\"")
    task = ctx["ingest"].get(key)
    if task is None or Path(task.notebook_path or "").resolve() != notebook.resolve():
        problems.append(f"{where}: databricks.yml job {INGEST_JOB} has no task {key} running {notebook.name}")
    return problems


def _check_wiring(root: Path, bundle, refs: set[str]) -> list[str]:
    """Gold lineage names registered tables, every pipeline notebook is a task, the DAGs trigger the jobs."""
    problems = []
    for target, sources in _gold_sources(root).items():
        problems += [f"lineage: pipeline/gold.py SOURCES names {ref}, not in the registry"
                     for ref in (target, *sources) if ref not in refs]
    tasks = {Path(t.notebook_path).resolve() for job in bundle.jobs.values() for t in job.tasks if t.notebook_path}
    for nb in sorted((root / "pipeline_notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" not in nb.parts and nb.resolve() not in tasks:
            problems.append(f"{nb.relative_to(root)}: not a task of any job in databricks.yml")
    dags = _dag_jobs(root)
    problems += [f"airflow: no DAG in airflow/dags triggers job {job} (JOB = \"{job}\")"
                 for job in (INGEST_JOB, TRANSFORM_JOB, QUALITY_JOB) if job not in dags]
    return problems


def check_project(project: str | Path | None = None) -> list[str]:
    """Every inconsistency found (empty: consistent). Each problem names the source and the file to fix."""
    from retail_lakehouse.databricks.bundle import load_bundle

    root = Path(project) if project is not None else PROJECT_ROOT
    lib = root / "lib" / "retail_lakehouse"
    try:
        registry = load_registry((lib / "core" / "schema_definitions.yaml").read_text(encoding="utf-8"))
        bundle = load_bundle(root / "databricks.yml", target="local")
    except (LakehouseError, OSError) as exc:
        return [f"project: {exc}"]
    rule_sets = {p.stem: p for p in sorted((lib / "pipeline" / "rules").glob("*.yaml"))}
    ctx = {"root": root, "lib": lib, "refs": {t.ref: t for t in registry}, "fed": set(), "rule_sets": rule_sets,
           "ingest": _tasks(bundle, INGEST_JOB), "transform": _tasks(bundle, TRANSFORM_JOB)}
    problems: list[str] = []
    for name, path in rule_sets.items():
        problems += _check_rule_set(name, path, ctx)
    for t in registry.in_layer("bronze"):
        problems += _check_bronze(t, ctx)
    problems += [f"silver.{t.name}: registered, but no rule set rules/{t.name}.yaml builds it"
                 for t in registry.in_layer("silver") if t.name not in rule_sets and not t.name.endswith("_quarantine")]
    return problems + _check_wiring(root, bundle, set(ctx["refs"]))
