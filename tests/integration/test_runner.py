"""The local job runner on a tiny bundle (tests/fixtures/databricks_test.yml): order, parallelism,
parameters, retries with backoff, failure propagation, recording in job_runs, bundle validation."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from retail_lakehouse.core.errors import ConfigError, JobFailedError, JobNotFoundError, ParameterError
from retail_lakehouse.databricks.bundle import load_bundle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUNDLE = FIXTURES / "databricks_test.yml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(isolated_home):
    """A fresh LAKEHOUSE_HOME and engine for this module."""
    return isolated_home


@pytest.fixture(scope="module")
def bundle(home):
    return load_bundle(BUNDLE, target="local")


def job_runs(run_id: str) -> dict[tuple[str | None, int | None], dict]:
    from retail_lakehouse import engine

    rows = engine.sql(
        "SELECT * FROM retail_datalake.local_monitoring.job_runs WHERE run_id = :r", {"r": run_id}
    ).collect()
    return {(r["task_key"], r["attempt"]): r.asDict() for r in rows}


def injected(notebook: str) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))


# ----------------------------------------------------------------------------- runs


def test_dependency_order_parallelism_and_records(home, bundle):
    from retail_lakehouse.jobs.runner import load_run, run_job

    run = run_job("Parallel job", bundle=bundle, max_parallel=2, run_id="20260101T000000-aaaaaa")

    assert run.state == "SUCCESS", run.to_dict()
    left, right, join = run.task("left"), run.task("right"), run.task("join")
    assert left.start < right.end and right.start < left.end, "independent tasks should overlap"
    assert join.start >= max(left.end, right.end)
    run_dir = home / "runs" / run.run_id
    for key in ("left", "right", "join"):
        assert (run_dir / f"{key}.ipynb").is_file()
        assert run.task(key).output_path == str(run_dir / f"{key}.ipynb")
    # run.json holds the whole run and reads back
    assert load_run(run.run_id).to_dict() == json.loads((run_dir / "run.json").read_text())
    assert load_run(run.run_id).task("join").state == "SUCCESS"
    # each task's warm kernel reports the CPU it used (start-up and notebook), kept in run.json
    assert all(0 < run.task(k).cpu_seconds < 60 for k in ("left", "right", "join")), run.to_dict()
    assert load_run(run.run_id).task("join").cpu_seconds == run.task("join").cpu_seconds

    rows = job_runs(run.run_id)
    assert set(rows) == {(None, None), ("left", 1), ("right", 1), ("join", 1)}
    job_row = rows[(None, None)]
    assert job_row["job_name"] == "Parallel job" and job_row["state"] == "SUCCESS"
    assert job_row["output_path"] == str(run_dir)
    compute = json.loads(rows[("left", 1)]["compute"])
    assert compute["job_cluster_key"] == "small" and compute["num_workers"] == 1  # local target override
    assert json.loads(rows[("join", 1)]["parameters"])["x"] == "3"


def test_job_parameters_override_base_parameters(home, bundle):
    from retail_lakehouse import engine
    from retail_lakehouse.jobs.runner import run_job

    remote = engine.start_local_server()
    run = run_job("params_job", {"x": 9, "expect_remote": remote}, bundle=bundle)

    assert run.state == "SUCCESS", run.to_dict()
    query = run.task("query")
    assert query.parameters["x"] == "9"  # job parameter wins over base_parameters x=7
    assert query.parameters["label"] == "x=9 task=query"  # dynamic value references
    assert query.parameters["env"] == "local" and query.parameters["run_id"] == run.run_id
    assert query.parameters["task_key"] == "query"
    cell = injected(query.output_path)
    assert 'x = "9"' in cell and f'expect_remote = "{remote}"' in cell  # notebook ran on the shared engine
    assert run.parameters == {"x": "9", "expect_remote": remote}


def test_parameter_defaults_come_from_target_variables(bundle):
    assert bundle.job("params_job").parameters["x"] == "3"  # default ${var.default_x}, local target sets 3
    assert load_bundle(BUNDLE, target="prod").job("params_job").parameters["x"] == "2"
    assert load_bundle(BUNDLE, target="prod").job("parallel_job").clusters["small"].num_workers == 8


def test_unknown_parameter_is_refused_before_running(home, bundle):
    from retail_lakehouse.jobs.runner import run_job

    with pytest.raises(ParameterError) as err:
        run_job("params_job", {"y": "1"}, bundle=bundle, run_id="never-ran")
    assert "'y'" in str(err.value) and "x, expect_remote" in str(err.value)
    assert not (home / "runs" / "never-ran").exists()


def test_unknown_job_lists_the_jobs(bundle):
    from retail_lakehouse.jobs.runner import run_job

    with pytest.raises(JobNotFoundError) as err:
        run_job("nope", bundle=bundle)
    for key in ("chain_job", "fail_job", "parallel_job", "params_job", "retry_job"):
        assert key in str(err.value)


def test_flaky_task_succeeds_on_third_attempt_with_doubling_backoff(home, bundle, tmp_path):
    from retail_lakehouse.jobs.runner import run_job

    marker = tmp_path / "attempts.txt"
    run = run_job("retry_job", {"marker_path": str(marker)}, bundle=bundle)  # min_retry_interval_millis: 200

    assert run.state == "SUCCESS", run.to_dict()
    attempts = run.attempts("flaky")
    assert [a.state for a in attempts] == ["FAILED", "FAILED", "SUCCESS"]
    assert (
        attempts[0].error_class == "ValueError"
        and "transient failure on attempt 1" in attempts[0].error_message
    )
    gap1 = (attempts[1].start - attempts[0].end).total_seconds()
    gap2 = (attempts[2].start - attempts[1].end).total_seconds()
    assert 0.2 <= gap1 < 0.4 <= gap2, (gap1, gap2)
    run_dir = home / "runs" / run.run_id
    assert [a.output_path for a in attempts] == [
        str(run_dir / "flaky.attempt1.ipynb"),
        str(run_dir / "flaky.attempt2.ipynb"),
        str(run_dir / "flaky.ipynb"),
    ]
    assert all(Path(a.output_path).is_file() for a in attempts)
    rows = job_runs(run.run_id)
    assert {k: r["state"] for k, r in rows.items()} == {
        (None, None): "SUCCESS",
        ("flaky", 1): "FAILED",
        ("flaky", 2): "FAILED",
        ("flaky", 3): "SUCCESS",
    }


def test_failing_task_fails_the_job_and_skips_downstream(home, bundle):
    from retail_lakehouse.jobs.runner import run_job

    run = run_job("fail_job", bundle=bundle, retry_backoff_seconds=0.05)

    assert run.state == "FAILED"
    assert [a.state for a in run.attempts("boom")] == ["FAILED"] * 3
    assert run.task("downstream").state == "UPSTREAM_FAILED"
    assert run.task("further_down").state == "UPSTREAM_FAILED"
    assert run.task("cleanup").state == "SUCCESS"  # run_if: ALL_DONE
    run_dir = home / "runs" / run.run_id
    assert sorted(p.name for p in run_dir.glob("*.ipynb")) == [
        "boom.attempt1.ipynb",
        "boom.attempt2.ipynb",
        "boom.ipynb",
        "cleanup.ipynb",
    ]

    rows = job_runs(run.run_id)
    assert rows[(None, None)]["state"] == "FAILED"
    for attempt in (1, 2, 3):
        row = rows[("boom", attempt)]
        assert row["state"] == "FAILED" and row["error_class"] == "RuntimeError"
        assert "always fails: kaput" in row["error_message"]
    assert rows[("downstream", 0)]["state"] == "UPSTREAM_FAILED"
    assert rows[("boom", 3)]["output_path"] == str(run_dir / "boom.ipynb")

    with pytest.raises(JobFailedError) as err:
        run.raise_for_state()
    assert err.value.failed_tasks == ["boom"] and err.value.run_id == run.run_id
    assert "always fails: kaput" in str(err.value) and str(run_dir / "boom.ipynb") in str(err.value)


def test_chained_job_runs_the_other_job(home, bundle):
    from retail_lakehouse.jobs.runner import load_run, run_job

    run = run_job("chain_job", bundle=bundle)

    assert run.state == "SUCCESS", run.to_dict()
    step = run.task("run_params")
    assert step.child_run_id == f"{run.run_id}.run_params"
    child = load_run(step.child_run_id)
    assert child.job == "params_job" and child.state == "SUCCESS"
    assert child.task("query").parameters["x"] == "5"  # the parent's parameter of the same name
    assert run.task("after").parameters["x"] == "5"  # {{job.parameters.x}}
    assert set(job_runs(child.run_id)) == {(None, None), ("query", 1)}


def test_round_trips_are_counted_per_process_with_lakehouse_rpc_log(home, bundle, tmp_path, monkeypatch):
    """The benchmark's round-trip count: every process opening a session (the task kernels) appends
    `<pid> <kind>` per Spark Connect request to the file LAKEHOUSE_RPC_LOG names."""
    import os

    from retail_lakehouse.jobs.runner import run_job

    log = tmp_path / "rpc.log"
    monkeypatch.setenv("LAKEHOUSE_RPC_LOG", str(log))
    run = run_job("Parallel job", bundle=bundle, max_parallel=2)
    assert run.state == "SUCCESS", run.to_dict()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert lines and all(len(x) == 2 and x[0].isdigit() for x in lines)
    assert {kind for _, kind in lines} <= {"execute", "analyze", "config"} and "execute" in {k for _, k in lines}
    kernels = {pid for pid, _ in lines} - {str(os.getpid())}
    assert len(kernels) == 3, "one kernel per task, each counting its own requests"


def test_a_run_is_recorded_in_one_commit_with_its_chained_runs(home, bundle):
    """job_runs gets a run's rows (its tasks, its chained job's run and tasks, itself) in one Delta
    commit when the top-level run ends, whatever its task count."""
    from deltalake import DeltaTable

    from retail_lakehouse.jobs.runner import run_job

    table = home / "warehouse" / "retail_datalake" / "local_monitoring" / "job_runs"
    before = DeltaTable(str(table)).version() if (table / "_delta_log").is_dir() else -1
    run = run_job("chain_job", bundle=bundle)
    assert run.state == "SUCCESS", run.to_dict()
    history = DeltaTable(str(table)).history()
    new = [h for h in history if h["version"] > before]
    assert len(new) == 1, [h["version"] for h in history]
    child_id = run.task("run_params").child_run_id
    assert set(job_runs(run.run_id)) == {(None, None), ("run_params", 1), ("after", 1)}
    assert set(job_runs(child_id)) == {(None, None), ("query", 1)}


def test_canceled_run_runs_nothing(home, bundle):
    import threading

    from retail_lakehouse.jobs.runner import run_job

    cancel = threading.Event()
    cancel.set()
    run = run_job("parallel_job", bundle=bundle, cancel=cancel)

    assert run.state == "CANCELED"
    assert {t.task_key: t.state for t in run.tasks} == {
        "left": "CANCELED",
        "right": "CANCELED",
        "join": "CANCELED",
    }
    assert not list((home / "runs" / run.run_id).glob("*.ipynb"))
    with pytest.raises(JobFailedError, match="CANCELED"):
        run.raise_for_state()


# ----------------------------------------------------------------------------- bundle validation


def write_bundle(tmp_path: Path, tasks: str) -> Path:
    path = tmp_path / "databricks.yml"
    (tmp_path / "nb.ipynb").write_text((FIXTURES / "notebooks" / "noop.ipynb").read_text())
    path.write_text(f"bundle: {{name: broken}}\nresources:\n  jobs:\n    broken_job:\n      tasks:\n{tasks}")
    return path


def test_bundle_validation_reports_every_problem(tmp_path):
    tasks = """
        - task_key: a
          depends_on: [{task_key: c}]
          notebook_task: {notebook_path: ./nb.ipynb}
        - task_key: b
          depends_on: [{task_key: a}, {task_key: ghost}]
          notebook_task: {notebook_path: ./missing_notebook}
        - task_key: c
          depends_on: [{task_key: b}]
          notebook_task: {notebook_path: ./nb}
        - task_key: c
          notebook_task: {notebook_path: ./nb}
        - task_key: d
          run_job_task: {job_id: "${resources.jobs.nowhere.id}"}
"""
    with pytest.raises(ConfigError) as err:
        load_bundle(write_bundle(tmp_path, tasks))
    text = str(err.value)
    assert "duplicate task_key 'c'" in text
    assert "depends_on unknown task 'ghost'" in text
    assert "missing_notebook.ipynb does not exist" in text and "task 'b'" in text
    assert "cycle: a -> c -> b -> a" in text
    assert "unknown job 'nowhere'" in text


def test_bundle_variables_must_be_declared(tmp_path):
    tasks = """
        - task_key: a
          notebook_task: {notebook_path: "./nb.ipynb", base_parameters: {x: "${var.undeclared}"}}
"""
    with pytest.raises(ConfigError, match="unknown variable"):
        load_bundle(write_bundle(tmp_path, tasks))


def test_bundle_unknown_target(tmp_path):
    with pytest.raises(ConfigError, match="known targets: local, prod"):
        load_bundle(BUNDLE, target="staging")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_job_runs_leave_no_event_loops_open(home, bundle):
    """jupyter_client's blocking calls make an event loop per thread that nothing closes; the runner's
    task threads and the kernel pool's threads close theirs, so a process running jobs for long (the
    local workspace) does not pile up descriptors until the garbage collector happens to run."""
    from retail_lakehouse.jobs.runner import run_job
    from tests.conftest import epoll_descriptors, gc_paused

    with gc_paused():
        run_job("Parallel job", bundle=bundle, max_parallel=2)
        after_one = epoll_descriptors()
        for _ in range(2):
            assert run_job("Parallel job", bundle=bundle, max_parallel=2).state == "SUCCESS"
        after_three = epoll_descriptors()
    # without the closing: 8 more epoll descriptors per run of this 3-task job (checked: 20 -> 36)
    assert after_three <= after_one, f"event loops left open: {after_one} -> {after_three} epoll descriptors"
