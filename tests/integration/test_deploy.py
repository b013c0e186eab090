"""`lakehouse deploy` against the local workspace: plan, first deploy, idempotent redeploy, changes."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_BUNDLE = REPO / "tests" / "fixtures" / "databricks_test.yml"
DEPLOY_ROOT = "/Workspace/Shared/retail_lakehouse/local"
JOBS = ("retail_ingestion", "retail_transformation", "retail_data_quality_checks", "retail_daily")


def copy_bundle(src: Path, dst: Path) -> Path:
    """databricks.yml with the notebooks, params and library it deploys."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "databricks.yml", dst / "databricks.yml")
    for folder in ("pipeline_notebooks", "ops_notebooks", "params", "lib/retail_lakehouse"):
        if (src / folder).is_dir():
            shutil.copytree(src / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A snapshot of the repository's bundle: files edited meanwhile do not move the tests."""
    return copy_bundle(REPO, tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, root):
    """A local workspace on a fresh LAKEHOUSE_HOME serving the test bundle, so the repository's jobs
    do not exist yet (started on databricks.yml it would register them itself)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LAKEHOUSE_HOME", str(tmp_path_factory.mktemp("lakehouse")))
    mp.setenv("LAKEHOUSE_ENV", "local")
    mp.setenv("LAKEHOUSE_BUNDLE", str(root / "databricks.yml"))  # the default of deploy()/plan()
    from retail_lakehouse import local as local_workspace

    workspace = local_workspace.start(bundle_path=FIXTURE_BUNDLE)
    yield workspace
    local_workspace.stop()
    mp.undo()


@pytest.fixture(scope="module")
def w(ws):
    from retail_lakehouse.databricks.workspace import connect

    return connect("local")


def snapshot(w) -> dict:
    """Every job's settings and every deployed object's modification time."""
    from databricks.sdk.errors import NotFound

    jobs = {j.job_id: w.jobs.get(j.job_id).settings.as_dict() for j in w.jobs.list()}
    try:
        files = {
            o.path: (o.object_type, o.modified_at, o.size)
            for o in w.workspace.list(DEPLOY_ROOT, recursive=True)
        }
    except NotFound:
        files = {}
    return {"jobs": jobs, "files": files}


@pytest.fixture(scope="module")
def dry(w):
    from retail_lakehouse.databricks.deploy import deploy

    before = snapshot(w)
    lines: list[str] = []
    result = deploy("local", dry_run=True, echo=lines.append)
    return before, result, "\n".join(lines), snapshot(w)


@pytest.fixture(scope="module")
def first(w, dry):
    from retail_lakehouse.databricks.deploy import deploy

    return deploy("local", echo=lambda _line: None)


@pytest.fixture(scope="module")
def second(w, first):
    from retail_lakehouse.databricks.deploy import deploy

    before = snapshot(w)
    result = deploy("local", echo=lambda _line: None)
    return before, result, snapshot(w)


@pytest.fixture()
def bundle_copy(tmp_path, root, second):
    """A copy of the deployed bundle to change one thing in."""
    return copy_bundle(root, tmp_path / "bundle")


def source_notebooks(root: Path) -> list[Path]:
    return sorted(p for d in ("pipeline_notebooks", "ops_notebooks") for p in (root / d).rglob("*.ipynb"))


def test_dry_run_lists_uploads_and_creates_and_changes_nothing(dry):
    before, result, out, after = dry
    assert before == after
    assert not result.applied
    p = result.plan
    assert p.root_path == DEPLOY_ROOT
    assert {f.action for f in p.files} == {"UPLOAD"}
    assert [(j.action, j.name) for j in p.jobs] == [("CREATE", n) for n in JOBS]  # referenced jobs first
    notebooks = [f for f in p.files if f.kind == "notebook"]
    assert len(notebooks) == len(source_notebooks(p.bundle.root))
    assert all(not f.workspace_path.endswith(".ipynb") for f in notebooks)
    library = {f.workspace_path for f in p.files if f.kind == "file"}
    assert f"{DEPLOY_ROOT}/files/lib/retail_lakehouse/databricks/bundle.py" in library
    assert f"{DEPLOY_ROOT}/files/lib/retail_lakehouse/core/schema_definitions.yaml" in library
    assert not any("__pycache__" in path for path in library)
    assert "CREATE     job       retail_daily" in out
    assert f"UPLOAD     notebook  {DEPLOY_ROOT}/files/pipeline_notebooks/quality/run_quality_checks" in out
    assert "dry run: nothing changed" in out


def test_first_deploy_creates_jobs_and_uploads_notebooks(w, root, first):
    from databricks.sdk.service.workspace import ObjectType

    assert first.applied
    by_name = {j.settings.name: j.job_id for j in w.jobs.list()}
    for name in JOBS:
        assert by_name[name] == first.job_ids[name]
    for nb in source_notebooks(root):
        rel = nb.relative_to(root).with_suffix("").as_posix()
        assert w.workspace.get_status(f"{DEPLOY_ROOT}/files/{rel}").object_type == ObjectType.NOTEBOOK
    status = w.workspace.get_status(f"{DEPLOY_ROOT}/files/lib/retail_lakehouse/databricks/deploy.py")
    assert status.object_type == ObjectType.FILE
    src = root / "pipeline_notebooks/ingestion/batch/ingest_orders.ipynb"
    exported = w.workspace.export(f"{DEPLOY_ROOT}/files/pipeline_notebooks/ingestion/batch/ingest_orders")
    assert base64.b64decode(exported.content) == src.read_bytes()

    job = w.jobs.get(first.job_ids["retail_ingestion"]).settings
    assert job.tags == {"deployed_by": "retail_lakehouse", "target": "local"}
    assert job.max_concurrent_runs == 1
    task = next(t for t in job.tasks if t.task_key == "ingest_orders")
    assert (
        task.notebook_task.notebook_path
        == f"{DEPLOY_ROOT}/files/pipeline_notebooks/ingestion/batch/ingest_orders"
    )
    assert task.notebook_task.base_parameters == {"env": "local", "run_id": "{{job.run_id}}"}
    assert (task.max_retries, task.min_retry_interval_millis, task.job_cluster_key) == (2, 2000, "small")
    assert job.job_clusters[0].new_cluster.num_workers == 2
    assert [p.name for p in job.parameters] == ["max_files_per_trigger", "backfill_start_date", "backfill_end_date"]
    deps = next(
        t
        for t in w.jobs.get(first.job_ids["retail_transformation"]).settings.tasks
        if t.task_key == "clean_orders"
    )
    assert {d.task_key for d in deps.depends_on} == {"clean_customers", "clean_stores"}


def test_chained_job_runs_the_created_jobs(w, first):
    daily = w.jobs.get(first.job_ids["retail_daily"]).settings
    refs = {t.task_key: t.run_job_task.job_id for t in daily.tasks}
    assert refs == {
        "ingestion": first.job_ids["retail_ingestion"],
        "transformation": first.job_ids["retail_transformation"],
        "quality": first.job_ids["retail_data_quality_checks"],
    }
    assert daily.schedule.quartz_cron_expression == "0 0 2 * * ?"


def test_second_deploy_changes_nothing(second, first):
    before, result, after = second
    assert result.plan.is_noop
    assert {a for a, _, _ in result.plan.rows()} == {"UNCHANGED"}
    assert result.changed == ()
    assert before == after  # no job settings changed, no file rewritten
    assert result.job_ids == first.job_ids


def test_changed_notebook_is_the_only_update(w, root, first, bundle_copy):
    from retail_lakehouse.databricks.deploy import apply, plan

    nb = bundle_copy / "pipeline_notebooks/quality/run_quality_checks.ipynb"
    doc = json.loads(nb.read_text())
    doc["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["changed by test_deploy"]})
    nb.write_text(json.dumps(doc, indent=1))
    p = plan(w, "local", bundle_path=bundle_copy / "databricks.yml")
    wpath = f"{DEPLOY_ROOT}/files/pipeline_notebooks/quality/run_quality_checks"
    assert [(c.action, c.workspace_path) for c in p.changes] == [("UPDATE", wpath)]
    jobs_before = snapshot(w)["jobs"]
    result = apply(w, p)
    assert result.changed == (wpath,)
    assert base64.b64decode(w.workspace.export(wpath).content) == nb.read_bytes()
    assert snapshot(w)["jobs"] == jobs_before
    # back to the repository's version: again exactly that notebook
    back = plan(w, "local", bundle_path=root / "databricks.yml")
    assert [(c.action, c.workspace_path) for c in back.changes] == [("UPDATE", wpath)]
    apply(w, back)
    assert plan(w, "local", bundle_path=root / "databricks.yml").is_noop


def test_changed_base_parameters_update_only_that_job(w, root, first, bundle_copy):
    from retail_lakehouse.databricks.deploy import apply, plan

    yml = bundle_copy / "databricks.yml"
    text = yml.read_text()
    old = 'base_parameters: {env: "${var.env}", run_id: "{{job.run_id}}", layer: gold}'
    assert old in text
    yml.write_text(text.replace(old, old[:-1] + ", strict: true}"))
    p = plan(w, "local", bundle_path=yml)
    assert [(c.action, getattr(c, "name", None)) for c in p.changes] == [
        ("UPDATE", "retail_data_quality_checks")
    ]
    assert "check_gold" in p.changes[0].reason
    jid = first.job_ids["retail_data_quality_checks"]
    apply(w, p)
    task = next(t for t in w.jobs.get(jid).settings.tasks if t.task_key == "check_gold")
    assert task.notebook_task.base_parameters["strict"] == "true"
    assert {j.settings.name: j.job_id for j in w.jobs.list()}[
        "retail_data_quality_checks"
    ] == jid  # reset, not a new job
    apply(w, plan(w, "local", bundle_path=root / "databricks.yml"))
    assert plan(w, "local", bundle_path=root / "databricks.yml").is_noop


def test_file_gone_from_the_sources_is_deleted(w, root, bundle_copy):
    from databricks.sdk.errors import NotFound

    from retail_lakehouse.databricks.deploy import apply, plan

    (bundle_copy / "params" / "qa.yaml").unlink()
    p = plan(w, "local", bundle_path=bundle_copy / "databricks.yml")
    wpath = f"{DEPLOY_ROOT}/files/params/qa.yaml"
    assert [(c.action, c.workspace_path) for c in p.changes] == [("DELETE", wpath)]
    apply(w, p)
    with pytest.raises(NotFound):
        w.workspace.get_status(wpath)
    back = plan(w, "local", bundle_path=root / "databricks.yml")
    assert [(c.action, c.workspace_path) for c in back.changes] == [("UPLOAD", wpath)]
    apply(w, back)
    assert plan(w, "local", bundle_path=root / "databricks.yml").is_noop


def test_notebook_edited_in_the_workspace_is_restored(w, root, second):
    from databricks.sdk.service.workspace import ImportFormat

    from retail_lakehouse.databricks.deploy import apply, plan

    wpath = f"{DEPLOY_ROOT}/files/pipeline_notebooks/ingestion/batch/ingest_stores"
    edited = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()
    w.workspace.import_(
        wpath, content=base64.b64encode(edited).decode(), format=ImportFormat.JUPYTER, overwrite=True
    )
    p = plan(w, "local")
    assert [(c.action, c.workspace_path) for c in p.changes] == [("UPDATE", wpath)]
    assert "workspace" in p.changes[0].reason
    apply(w, p)
    src = root / "pipeline_notebooks/ingestion/batch/ingest_stores.ipynb"
    assert base64.b64decode(w.workspace.export(wpath).content) == src.read_bytes()
    assert plan(w, "local").is_noop


def test_target_root_path_is_used(w, bundle_copy):
    from retail_lakehouse.databricks.deploy import plan

    yml = bundle_copy / "databricks.yml"
    text = yml.read_text().replace(
        "  local:\n    default: true\n",
        "  local:\n    default: true\n    workspace:\n      root_path: /Workspace/Shared/${bundle.name}-custom/${bundle.target}\n",
    )
    yml.write_text(text)
    p = plan(w, "local", bundle_path=yml)
    assert p.root_path == "/Workspace/Shared/retail_lakehouse-custom/local"
    assert {f.action for f in p.files} == {"UPLOAD"}
    task = p.jobs[0].settings["tasks"][0]
    assert task["notebook_task"]["notebook_path"].startswith(
        "/Workspace/Shared/retail_lakehouse-custom/local/files/"
    )
    # the jobs exist (same names): those with notebooks change their paths, the chain does not
    assert {j.name: j.action for j in p.jobs} == {
        **dict.fromkeys(JOBS, "UPDATE"),
        "retail_daily": "UNCHANGED",
    }


def test_qa_and_prod_need_yes(ws, capsys):
    from retail_lakehouse.core.errors import ConfirmationRequired
    from retail_lakehouse.databricks.deploy import deploy, run_cli

    for env in ("qa", "prod"):
        with pytest.raises(ConfirmationRequired, match="--yes"):
            deploy(env)
        assert run_cli(env, dry_run=False, yes=False) == 2
        assert f"lakehouse deploy --env {env} --yes" in capsys.readouterr().err


def test_run_cli_exit_codes(w, second, capsys):
    from retail_lakehouse.databricks.deploy import run_cli

    assert run_cli("local", dry_run=True, yes=False) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and ws_token(w) not in out
    assert run_cli("local", dry_run=False, yes=False, bundle_path="/nonexistent/databricks.yml") == 2


def ws_token(w) -> str:
    return str(w.config.token)


def test_settings_diff_ignores_server_defaults():
    from retail_lakehouse.databricks.job_settings import settings_diff as _diff

    want = {
        "name": "j",
        "tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/x", "base_parameters": {"p": "1"}}}],
        "job_clusters": [{"job_cluster_key": "c", "new_cluster": {"num_workers": 2}}],
    }
    have = {
        "name": "j",
        "format": "MULTI_TASK",
        "max_concurrent_runs": 1,
        "timeout_seconds": 0,
        "email_notifications": {},
        "run_as": {"user_name": "someone"},
        "tasks": [
            {
                "task_key": "a",
                "run_if": "ALL_SUCCESS",
                "timeout_seconds": 0,
                "notebook_task": {
                    "notebook_path": "/x",
                    "base_parameters": {"p": "1"},
                    "source": "WORKSPACE",
                },
            }
        ],
        "job_clusters": [
            {"job_cluster_key": "c", "new_cluster": {"num_workers": 2, "enable_elastic_disk": True}}
        ],
    }
    assert _diff(want, have, "") == []
    have["tasks"][0]["notebook_task"]["base_parameters"]["q"] = "2"
    assert _diff(want, have, "") == ["tasks[a].notebook_task.base_parameters.q"]
    have["tasks"][0]["notebook_task"]["base_parameters"].pop("q")
    have["schedule"] = {"quartz_cron_expression": "0 0 1 * * ?"}
    assert _diff(want, have, "") == ["schedule"]
    have.pop("schedule")
    have["tasks"].append({"task_key": "b"})
    assert _diff(want, have, "") == ["tasks[b]"]


def test_deploy_and_the_local_workspace_convert_bundle_jobs_alike():
    """One conversion of bundle jobs to Jobs API settings: a deploy's settings and the local
    workspace's differ only where they must (notebook paths under the deploy root, deploy tags)."""
    from retail_lakehouse.databricks.bundle import load_bundle
    from retail_lakehouse.databricks.deploy import job_settings
    from retail_lakehouse.databricks.job_settings import settings_of

    b = load_bundle(target="dev")
    ids = {key: n + 1 for n, key in enumerate(sorted(b.jobs))}
    for key, job in b.jobs.items():
        deployed = job_settings(job, "dev", "/Workspace/x", b.root, ids.__getitem__)
        local = settings_of(job, ids.get)
        deployed.pop("tags", None)
        local.pop("tags", None)
        for d, loc in zip(deployed["tasks"], local["tasks"], strict=True):
            if "notebook_task" in d:
                assert d["notebook_task"]["notebook_path"].startswith("/Workspace/x/files/")
                d["notebook_task"].pop("notebook_path")
                loc["notebook_task"].pop("notebook_path")
        assert deployed == local, key
        assert deployed["max_concurrent_runs"] == 1
        assert all("retry_on_timeout" in t for t in deployed["tasks"])


def _webhook_ids(settings: dict) -> set[str]:
    return {e["id"] for entries in (settings.get("webhook_notifications") or {}).values() for e in entries}


def test_destination_names_in_the_bundle_deploy_as_ids(w, first):
    from retail_lakehouse.databricks.notification_destinations import destinations, is_destination_id

    local_id = destinations(w)["local-alerts-webhook"]
    assert is_destination_id(local_id)
    planned = {j.name: _webhook_ids(j.settings) for j in first.plan.jobs}
    assert planned["retail_ingestion"] == {local_id}
    deployed = {j.settings.name: _webhook_ids(w.jobs.get(j.job_id).settings.as_dict()) for j in w.jobs.list()}
    assert deployed["retail_ingestion"] == {local_id}


def test_unknown_destination_stops_the_deploy_and_changes_nothing(w, bundle_copy):
    from retail_lakehouse.core.errors import ConfigError
    from retail_lakehouse.databricks.deploy import deploy

    yml = bundle_copy / "databricks.yml"
    text = yml.read_text()
    assert "    default: local-alerts-webhook\n" in text
    yml.write_text(text.replace("    default: local-alerts-webhook\n", "    default: retail-prod-pagerduty\n", 1))
    before = snapshot(w)
    with pytest.raises(ConfigError, match=r"'retail-prod-pagerduty'.*notification-destinations create"):
        deploy("local", bundle_path=str(yml), echo=lambda _line: None)
    assert snapshot(w) == before


def test_destination_ids_are_sent_as_written():
    from retail_lakehouse.databricks.notification_destinations import names_in, resolve

    given = "0a1b2c3d-0000-4000-8000-123456789abc"
    settings = [{"webhook_notifications": {"on_failure": [{"id": given}]}, "tasks": []}]
    assert names_in(settings) == []
    # no request is made for ids: a client that cannot connect is never used
    assert resolve(None, settings, env="prod") is settings  # type: ignore[arg-type]
    named = [{"tasks": [{"task_key": "t", "webhook_notifications": {"on_start": [{"id": "ops-slack"}]}}]}]
    assert names_in(named) == ["ops-slack"]
