"""`lakehouse onboard`: inference from a sample, the files written into a copy of the project (never this
checkout), refusals that write nothing, `--dry-run`, and `onboard --check` catching broken wiring."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from retail_lakehouse import cli
from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.core.errors import ConfigError, ParameterError, SourceError
from retail_lakehouse.core.tables import load_registry, registry
from retail_lakehouse.databricks.bundle import load_bundle
from retail_lakehouse.onboarding import SourceSample, check_project, infer, plan_source, sample_landing
from retail_lakehouse.onboarding.project_copy import ProjectCopy
from retail_lakehouse.pipeline.silver import parse_rule_set

COLUMNS = {"return_id": "bigint", "order_id": "bigint", "return_ts": "string", "reason": "string",
           "refund_amount": "double", "updated_at": "string"}


def _rows(n: int = 40) -> list[dict]:
    rows = [{"return_id": i, "order_id": 100 + i, "return_ts": f"2024-01-11 0{i % 10}:00:00", "reason": " damaged ",
             "refund_amount": 10.5 + i, "updated_at": f"2024-01-11 0{i % 10}:30:00"} for i in range(1, n + 1)]
    rows[0]["refund_amount"] = -3.25  # one negative: a defect, not the range's lower bound
    return rows


SAMPLE = SourceSample("jdbc", "returns", COLUMNS, _rows())


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh copy of the project's runnable parts (the checkout is never written)."""
    return ProjectCopy.create(tmp_path / "copy").project


# ----------------------------------------------------------------------------- inference


def test_infers_key_watermark_types_ranges_and_references():
    s = infer(SAMPLE, "returns", registry())
    assert (s.key, s.watermark, s.business_time, s.date_column) == ("return_id", "updated_at", "return_ts", "return_date")
    types = {c.name: c.silver_type for c in s.columns}
    assert types == {"return_id": "bigint", "order_id": "bigint", "return_ts": "timestamp", "reason": "string",
                     "refund_amount": "decimal(12,2)", "updated_at": "timestamp"}
    assert s.ranges == {"refund_amount": (0.0, 505.0)}  # from 0 (negatives are rare), to 10x the largest
    assert s.references == {"order_id": "silver.orders.order_id"}
    assert "return_id" in s.describe() and "range rule 0..505 (review)" in s.describe()


def test_overrides_and_clear_refusals():
    s = infer(SAMPLE, "returns", registry(), key="order_id", watermark="return_ts")
    assert (s.key, s.watermark) == ("order_id", "return_ts")
    with pytest.raises(ParameterError, match="not a column"):
        infer(SAMPLE, "returns", registry(), key="nope")
    with pytest.raises(ParameterError, match="holds no timestamps"):
        infer(SAMPLE, "returns", registry(), watermark="reason")
    nested = SourceSample("landing", "x", {**COLUMNS, "tags": "list"}, _rows())
    with pytest.raises(ConfigError, match=r"unsupported type: tags \(list\)"):
        infer(nested, "returns", registry())
    keyless = SourceSample("jdbc", "t", {"a": "string", "updated_at": "string"},
                           [{"a": "x", "updated_at": "2024-01-01 00:00:00"}])
    with pytest.raises(ParameterError, match="--key"):
        infer(keyless, "things", registry())
    with pytest.raises(ParameterError, match="no rows"):
        infer(SourceSample("jdbc", "t", COLUMNS, []), "returns", registry())


def test_landing_sample(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "a.jsonl").write_text('{"event_id": "e1", "n": 1, "at": "2024-01-01 10:00:00"}\n'
                                             '{"event_id": "e2", "n": 2.5, "at": "2024-01-01 11:00:00"}\n')
    sample = sample_landing(tmp_path)
    assert sample.columns == {"event_id": "string", "n": "double", "at": "string"} and len(sample.rows) == 2
    assert infer(sample, "events", registry()).watermark is None  # files: by checkpoint
    with pytest.raises(SourceError, match="does not exist"):
        sample_landing(tmp_path / "missing")
    (tmp_path / "d1" / "b.jsonl").write_text("not json\n")
    with pytest.raises(SourceError, match="b.jsonl line 1 is not JSON"):
        sample_landing(tmp_path)


# ----------------------------------------------------------------------------- the change


def test_writes_one_consistent_change(project):
    assert check_project(project) == []
    plan = plan_source("returns", jdbc_table="returns", project=project, sample=SAMPLE)
    assert sorted(c.path for c in plan.changes if c.before is not None) == [
        "databricks.yml", "lib/retail_lakehouse/core/schema_definitions.yaml"]
    plan.write()
    assert check_project(project) == []
    reg = load_registry((project / "lib/retail_lakehouse/core/schema_definitions.yaml").read_text())
    bronze, silver = reg.get("bronze.returns"), reg.get("silver.returns")
    assert bronze.change_data_feed and bronze.source_system == "store_oltp" and bronze.watermark == "updated_at"
    assert reg.get("silver.returns_quarantine").keys == ("return_id",) and silver.sla.upstream == "bronze.returns"
    rules = parse_rule_set(yaml.safe_load((project / "lib/retail_lakehouse/pipeline/rules/returns.yaml").read_text()), "r")
    assert set(rules.columns) == set(silver.columns) - {"_run_id", "_processed_at"}
    assert {r.name: r.criticality for r in rules.rules} == {
        "return_id_not_null": "error", "return_ts_parseable": "error", "updated_at_parseable": "error",
        "refund_amount_in_range": "warn", "order_exists": "warn"}
    bundle = load_bundle(project / "databricks.yml", target="local")
    clean = {t.task_key: t for t in bundle.jobs["retail_transformation"].tasks}["clean_returns"]
    assert clean.depends_on == ("clean_orders",)
    assert "ingest_returns" in {t.task_key for t in bundle.jobs["retail_ingestion"].tasks}
    nb = json.loads((project / "pipeline_notebooks/ingestion/batch/ingest_returns.ipynb").read_text())
    assert 'ingest_oltp("returns"' in "".join(nb["cells"][3]["source"])
    assert (project / "tests/unit/test_source_returns.py").is_file()


def test_dry_run_prints_diffs_and_writes_nothing(project, capsys, monkeypatch):
    import retail_lakehouse.onboarding.plan as plan_mod

    monkeypatch.setattr(plan_mod, "sample_jdbc", lambda table, env: SAMPLE)
    before = _digest(project)
    assert cli.main(["onboard", "returns", "--jdbc-table", "returns", "--dry-run", "--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert "+++ b/lib/retail_lakehouse/pipeline/rules/returns.yaml" in out and "--- a/databricks.yml" in out
    assert "+        - task_key: clean_returns" in out and "dry run: nothing written" in out
    assert _digest(project) == before


def test_refusals_write_nothing(project):
    before = _digest(project)
    with pytest.raises(ParameterError, match="already onboarded"):
        plan_source("customers", jdbc_table="customers", project=project, sample=SAMPLE)
    with pytest.raises(ParameterError, match="exactly one source"):
        plan_source("returns", project=project, sample=SAMPLE)
    with pytest.raises(ParameterError, match="not a table name"):
        plan_source("Returns!", jdbc_table="returns", project=project, sample=SAMPLE)
    with pytest.raises(SourceError):
        plan_source("events", landing=str(project / "no-such-folder"), project=project)
    (project / "lib/retail_lakehouse/pipeline/rules/returns.yaml").write_text("table: returns\n")
    with pytest.raises(ParameterError, match="--force"):
        plan_source("returns", jdbc_table="returns", project=project, sample=SAMPLE)
    assert {k for k, v in _digest(project).items() if before.get(k) != v} == {
        "lib/retail_lakehouse/pipeline/rules/returns.yaml"}
    plan_source("returns", jdbc_table="returns", project=project, sample=SAMPLE, force=True).write(force=True)
    assert check_project(project) == []


# ----------------------------------------------------------------------------- --check


def test_check_passes_on_the_checkout_through_the_cli(capsys):
    assert cli.main(["onboard", "--check"]) == 0
    assert "every source is consistent" in capsys.readouterr().out
    assert check_project(PROJECT_ROOT) == []


def test_check_finds_broken_wiring(project):
    plan_source("returns", jdbc_table="returns", project=project, sample=SAMPLE).write()
    bundle = project / "databricks.yml"
    bundle.write_text(bundle.read_text().replace("          depends_on: [{task_key: clean_orders}]\n", ""))
    (project / "lib/retail_lakehouse/pipeline/checks/silver_returns.yaml").unlink()
    shutil.copy(project / "pipeline_notebooks/ingestion/batch/ingest_returns.ipynb",
                project / "pipeline_notebooks/ingestion/batch/ingest_spare.ipynb")
    rules = project / "lib/retail_lakehouse/pipeline/rules/returns.yaml"
    rules.write_text(rules.read_text().replace("  reason: trim(reason)\n", ""))
    problems = check_project(project)
    assert any("clean_returns must depend on clean_orders" in p for p in problems)
    assert any("no quality checks checks/silver_returns.yaml" in p for p in problems)
    assert any("ingest_spare.ipynb: not a task" in p for p in problems)
    assert any("columns differ" in p and "reason" in p for p in problems)
    assert cli.main(["onboard", "--check", "--project", str(project)]) == 1
    (project / "lib/retail_lakehouse/pipeline/rules/stores.yaml").unlink()
    assert "silver.stores: registered, but no rule set rules/stores.yaml builds it" in check_project(project)


def test_types_can_be_overridden():
    s = infer(SAMPLE, "returns", registry(), types={"refund_amount": "double", "order_id": "string"})
    assert (s.column("refund_amount").silver_type, s.column("refund_amount").expression) == ("double", "refund_amount")
    assert s.column("order_id").expression == "cast(order_id AS string)"
    with pytest.raises(ParameterError, match="not a column"):
        infer(SAMPLE, "returns", registry(), types={"nope": "double"})
    with pytest.raises(ConfigError, match="not supported"):
        infer(SAMPLE, "returns", registry(), types={"reason": "varchar(10)"})


def test_a_failed_write_leaves_the_project_unchanged(project):
    plan = plan_source("returns", jdbc_table="returns", project=project, sample=SAMPLE)
    before = _digest(project)
    (project / "tests").mkdir(exist_ok=True)
    (project / "tests" / "unit").write_text("a file where the test folder should be\n")  # the test cannot be written
    with pytest.raises(OSError):
        plan.write()
    after = _digest(project)
    assert {k for k in after if before.get(k) != after[k]} == {"tests/unit"}
    assert not list(project.rglob("*.onboard-tmp"))


def test_landing_ingestion_refuses_a_table_that_is_not_a_landing_source():
    from retail_lakehouse.pipeline.ingest import ingest_landing

    with pytest.raises(ParameterError, match="not a landing source"):
        ingest_landing("customers", run_id="r")


def test_warm_kernels_are_not_reused_after_the_registry_changes(tmp_path, monkeypatch):
    """Onboarding edits only YAML in the library; the warm-kernel server, whose modules read it at
    import, is keyed by it too, so the next run forks from a fresh one."""
    import os

    from retail_lakehouse.core import config
    from retail_lakehouse.jobs import _zygote

    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "tables.py").write_text("x = 1\n")
    os.utime(tmp_path / "core" / "tables.py", (500_000, 500_000))
    registry_file = tmp_path / "core" / "schema_definitions.yaml"
    registry_file.write_text("tables: []\n")
    os.utime(registry_file, (1_000_000, 1_000_000))
    monkeypatch.setattr(config, "LIBRARY_DIR", tmp_path)
    before = _zygote._code_stamp("python")
    os.utime(registry_file, (2_000_000, 2_000_000))
    assert _zygote._code_stamp("python") != before
