"""jobs.runner's scheduling core without notebooks: run_if, attempts and backoff, parameters, dynamic values.

Notebook execution (`runner._execute`) is replaced by a script of outcomes, so the scheduling loop runs
for real (threads, retries, upstream states, chained jobs) in milliseconds. Runs of real notebooks
are in tests/integration/test_runner.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from pathlib import Path

import pytest

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.databricks.bundle import RUN_IF, Bundle, JobSpec, TaskSpec
from retail_lakehouse.jobs import runner
from retail_lakehouse.jobs.scheduling import priorities

# ----------------------------------------------------------------------------- run_if (pure)

S, F, U, E, C = "SUCCESS", "FAILED", "UPSTREAM_FAILED", "EXCLUDED", "CANCELED"

# Upstream states -> what each rule decides (None: run the task), rules in RUN_IF's order.
RULES = (
    "ALL_SUCCESS",
    "ALL_DONE",
    "NONE_FAILED",
    "AT_LEAST_ONE_SUCCESS",
    "ALL_FAILED",
    "AT_LEAST_ONE_FAILED",
)
# fmt: off
RUN_IF_TABLE = {
    #        ALL_SUCCESS ALL_DONE NONE_FAILED AT_LEAST_ONE_SUCCESS ALL_FAILED AT_LEAST_ONE_FAILED
    (S, S): (None,       None,    None,       None,                E,         E),
    (S, F): (U,          None,    U,          None,                E,         None),
    (F, F): (U,          None,    U,          U,                   None,      None),
    (F, U): (U,          None,    U,          U,                   None,      None),  # upstream-failed is failed
    (S, E): (E,          None,    None,       None,                E,         E),
    (E, E): (E,          None,    None,       E,                   E,         E),
    (F, E): (U,          None,    U,          U,                   E,         None),
    (S, C): (C,          None,    C,          C,                   C,         C),  # canceled cancels, but ALL_DONE
    (F, C): (C,          None,    C,          C,                   C,         C),
}
# fmt: on


def test_the_table_covers_every_rule():
    assert RUN_IF == RULES


@pytest.mark.parametrize("rule", RUN_IF)
@pytest.mark.parametrize("upstream", list(RUN_IF_TABLE), ids=lambda u: "+".join(u))
def test_run_if(rule, upstream):
    assert (
        runner._run_if(TaskSpec("t", run_if=rule), list(upstream))
        == RUN_IF_TABLE[upstream][RULES.index(rule)]
    )


@pytest.mark.parametrize("rule", RUN_IF)
def test_a_task_without_upstream_always_runs(rule):
    assert runner._run_if(TaskSpec("t", run_if=rule), []) is None


@pytest.mark.parametrize(("upstream", "verdict"), [([S], None), ([F], U), ([U], U), ([E], E), ([C], C)])
def test_run_if_single_upstream_default_rule(upstream, verdict):
    assert runner._run_if(TaskSpec("t"), upstream) == verdict


# ----------------------------------------------------------------------------- attempts and backoff (pure)


@pytest.mark.parametrize(
    ("spec", "attempts"),
    [
        (TaskSpec("t"), runner.DEFAULT_ATTEMPTS),
        (TaskSpec("t", max_retries=0), 1),
        (TaskSpec("t", max_retries=1), 2),
        (TaskSpec("t", max_retries=4), 5),
        (TaskSpec("t", max_retries=-1), runner.DEFAULT_ATTEMPTS),  # negative: the default
        (TaskSpec("t", run_job="child"), 1),  # a chained job retries inside itself
        (TaskSpec("t", run_job="child", max_retries=2), 3),
    ],
)
def test_attempts_from_max_retries(spec, attempts):
    assert runner.attempts(spec) == attempts


def test_the_default_is_one_attempt_as_on_databricks():
    assert runner.DEFAULT_ATTEMPTS == 1 and runner.DEFAULT_BACKOFF_SECONDS == 2.0


class _Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, row) -> None:
        self.rows.append(row)


def execution(
    job: JobSpec,
    tmp_path: Path,
    *,
    jobs: dict[str, JobSpec] | None = None,
    backoff: float | None = 0.0,
    params: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
    run_id: str = "20240105T100000-abcdef",
    max_parallel: int = 2,
) -> runner._Execution:
    bundle = Bundle(
        path=tmp_path / "databricks.yml",
        name="b",
        target=None,
        targets=(),
        variables={},
        jobs={job.key: job, **(jobs or {})},
    )
    return runner._Execution(
        bundle=bundle,
        job=job,
        params=dict(job.parameters) if params is None else params,
        env="local",
        run_id=run_id,
        root=tmp_path / "runs",
        max_parallel=max_parallel,
        backoff=backoff,
        recorder=_Recorder(),
        cancel=cancel or threading.Event(),
        kernels=None,
    )


def _job(*tasks: TaskSpec, key: str = "j", parameters: dict[str, str] | None = None) -> JobSpec:
    return JobSpec(key=key, name=f"Job {key}", parameters=parameters or {}, tasks=tasks)


@pytest.mark.parametrize(
    ("override", "millis", "delays"),
    [
        (None, None, [2.0, 4.0, 8.0, 16.0]),  # the default: 2 s, doubled each retry
        (None, 500, [0.5, 1.0, 2.0, 4.0]),  # the task's min_retry_interval_millis
        (0.25, 500, [0.25, 0.5, 1.0, 2.0]),  # retry_backoff_seconds overrides the task's
        (0.0, 500, [0.0, 0.0, 0.0, 0.0]),  # no wait at all
    ],
)
def test_backoff_schedule(tmp_path, override, millis, delays):
    spec = TaskSpec("t", min_retry_interval_millis=millis)
    run = execution(_job(spec), tmp_path, backoff=override)
    assert [run._backoff(spec, attempt) for attempt in (1, 2, 3, 4)] == delays


# ----------------------------------------------------------------------------- the scheduling loop, notebooks scripted


@pytest.fixture
def script(monkeypatch):
    """Outcomes per task key, one per attempt (an exception to raise, or None to succeed); calls recorded."""
    outcomes: dict[str, list[BaseException | None]] = {}
    calls: list[tuple[str, dict[str, str]]] = []
    lock = threading.Lock()

    def fake_execute(spec, params, output, kernels):  # noqa: ARG001
        with lock:
            calls.append((spec.task_key, dict(params)))
            todo = outcomes.get(spec.task_key, [])
            outcome = todo.pop(0) if todo else None
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")  # the executed notebook papermill would leave
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(runner, "_execute", fake_execute)
    return outcomes, calls


def states(run) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for t in sorted(run.tasks, key=lambda t: (t.task_key, t.attempt)):
        out.setdefault(t.task_key, []).append((t.attempt, t.state))
    return out


def test_a_failing_task_is_tried_max_retries_plus_one_times(tmp_path, script):
    outcomes, calls = script
    outcomes["flaky"] = [RuntimeError(f"boom {i}") for i in range(10)]
    run = execution(
        _job(TaskSpec("flaky", notebook_path=tmp_path / "x.ipynb", max_retries=2)), tmp_path
    ).run()
    assert run.state == "FAILED"
    assert states(run) == {"flaky": [(1, F), (2, F), (3, F)]}
    assert [t.error_message for t in sorted(run.tasks, key=lambda t: t.attempt)] == [
        "boom 0",
        "boom 1",
        "boom 2",
    ]
    assert len(calls) == 3
    # Earlier attempts' notebooks are kept next to the last one.
    out = Path(run.output_dir)
    assert sorted(p.name for p in out.glob("flaky*.ipynb")) == [
        "flaky.attempt1.ipynb",
        "flaky.attempt2.ipynb",
        "flaky.ipynb",
    ]
    assert (out / "run.json").is_file()


def test_without_max_retries_a_task_is_tried_once_as_on_databricks(tmp_path, script):
    outcomes, _ = script
    outcomes["t"] = [ValueError("x")] * 5
    run = execution(_job(TaskSpec("t", notebook_path=tmp_path / "x.ipynb")), tmp_path).run()
    assert states(run) == {"t": [(1, F)]}


def test_a_task_that_recovers_succeeds_on_the_next_attempt(tmp_path, script):
    outcomes, _ = script
    outcomes["t"] = [ValueError("once")]
    run = execution(_job(TaskSpec("t", notebook_path=tmp_path / "x.ipynb", max_retries=3)), tmp_path).run()
    assert run.state == "SUCCESS"
    assert states(run) == {"t": [(1, F), (2, S)]}


def test_max_retries_zero_means_one_attempt(tmp_path, script):
    outcomes, _ = script
    outcomes["t"] = [ValueError("x")] * 3
    run = execution(_job(TaskSpec("t", notebook_path=tmp_path / "x.ipynb", max_retries=0)), tmp_path).run()
    assert states(run) == {"t": [(1, F)]}


def test_a_timeout_is_retried_only_with_retry_on_timeout(tmp_path, script):
    outcomes, _ = script
    outcomes["slow"] = [TimeoutError("cell timed out")] * 3
    outcomes["patient"] = [TimeoutError("cell timed out")] * 3
    job = _job(
        TaskSpec("slow", notebook_path=tmp_path / "x.ipynb", max_retries=2),
        TaskSpec("patient", notebook_path=tmp_path / "x.ipynb", max_retries=2, retry_on_timeout=True),
    )
    run = execution(job, tmp_path).run()
    assert states(run) == {"patient": [(1, F), (2, F), (3, F)], "slow": [(1, F)]}
    assert {t.error_class for t in run.tasks} == {"TimeoutError"}


def test_the_backoff_doubles_between_attempts(tmp_path, script, caplog):
    outcomes, _ = script
    outcomes["t"] = [ValueError("x")] * 3
    spec = TaskSpec("t", notebook_path=tmp_path / "x.ipynb", max_retries=2, min_retry_interval_millis=20)
    with caplog.at_level(logging.INFO, logger=runner.__name__):
        run = execution(_job(spec), tmp_path, backoff=None).run()
    waits = re.findall(r"task t attempt (\d) failed; retrying in ([\d.]+)s", caplog.text)
    assert waits == [("1", "0.02"), ("2", "0.04")]
    attempts = sorted(run.tasks, key=lambda t: t.attempt)
    assert attempts[1].start - attempts[0].end >= dt.timedelta(milliseconds=20)
    assert attempts[2].start - attempts[1].end >= dt.timedelta(milliseconds=40)


def test_upstream_failure_and_run_if_across_a_job(tmp_path, script):
    """The shape of the fixture bundle's fail_job: a failure skips its chain, ALL_DONE cleanup still runs."""
    outcomes, calls = script
    outcomes["boom"] = [RuntimeError("kaput")]
    nb = tmp_path / "x.ipynb"
    job = _job(
        TaskSpec("boom", notebook_path=nb, max_retries=0),
        TaskSpec("downstream", notebook_path=nb, depends_on=("boom",)),
        TaskSpec("further_down", notebook_path=nb, depends_on=("downstream",)),
        TaskSpec("cleanup", notebook_path=nb, depends_on=("boom",), run_if="ALL_DONE"),
        TaskSpec("alert", notebook_path=nb, depends_on=("boom",), run_if="AT_LEAST_ONE_FAILED"),
        TaskSpec("celebrate", notebook_path=nb, depends_on=("boom",), run_if="ALL_FAILED"),
        TaskSpec("after_alert", notebook_path=nb, depends_on=("alert", "downstream"), run_if="NONE_FAILED"),
        TaskSpec("independent", notebook_path=nb),
    )
    run = execution(job, tmp_path).run()
    assert run.state == "FAILED"
    assert states(run) == {
        "after_alert": [(0, U)],
        "alert": [(1, S)],
        "boom": [(1, F)],
        "celebrate": [(1, S)],
        "cleanup": [(1, S)],
        "downstream": [(0, U)],
        "further_down": [(0, U)],
        "independent": [(1, S)],
    }
    assert sorted(key for key, _ in calls) == ["alert", "boom", "celebrate", "cleanup", "independent"]
    assert run.outcomes["boom"].error_message == "kaput"


def test_excluded_tasks_do_not_fail_the_run(tmp_path, script):
    nb = tmp_path / "x.ipynb"
    job = _job(
        TaskSpec("ok", notebook_path=nb),
        TaskSpec("on_failure", notebook_path=nb, depends_on=("ok",), run_if="AT_LEAST_ONE_FAILED"),
        TaskSpec("after", notebook_path=nb, depends_on=("on_failure",)),
    )
    run = execution(job, tmp_path).run()
    assert run.state == "SUCCESS"
    assert states(run) == {"after": [(0, E)], "ok": [(1, S)], "on_failure": [(0, E)]}
    _, calls = script
    assert [key for key, _ in calls] == ["ok"]


def test_a_canceled_run_runs_nothing(tmp_path, script):
    cancel = threading.Event()
    cancel.set()
    nb = tmp_path / "x.ipynb"
    run = execution(
        _job(TaskSpec("a", notebook_path=nb), TaskSpec("b", notebook_path=nb, depends_on=("a",))),
        tmp_path,
        cancel=cancel,
    ).run()
    assert run.state == "CANCELED"
    assert states(run) == {"a": [(0, C)], "b": [(0, C)]}
    assert script[1] == []


def test_a_chained_job_is_one_attempt_and_fails_with_its_task_error(tmp_path, script):
    outcomes, calls = script
    outcomes["inner"] = [KeyError("missing")] * 5
    child = _job(
        TaskSpec("inner", notebook_path=tmp_path / "x.ipynb", max_retries=1),
        key="child",
        parameters={"day": "2024-01-01", "n": "1"},
    )
    parent = _job(
        TaskSpec("call", run_job="child", run_job_parameters={"n": "{{task.name}}"}),
        TaskSpec("after", notebook_path=tmp_path / "x.ipynb", depends_on=("call",)),
        parameters={"day": "2024-01-05", "other": "x"},
    )
    run = execution(parent, tmp_path, jobs={"child": child}).run()
    assert run.state == "FAILED"
    assert states(run) == {"after": [(0, U)], "call": [(1, F)]}
    call = run.outcomes["call"]
    assert call.child_run_id == "20240105T100000-abcdef.call"
    assert call.error_class == "KeyError" and call.error_message == "inner: 'missing'"
    # The child got the parent's parameters it declares, then the task's job_parameters.
    assert call.parameters == {"day": "2024-01-05", "n": "call"}
    assert [key for key, _ in calls] == ["inner", "inner"]  # the child's own retry


# ----------------------------------------------------------------------------- parameters


JOB = _job(TaskSpec("t"), parameters={"day": "2024-01-01", "full": "false", "note": ""})


def test_resolve_params_defaults_and_overrides():
    assert runner.resolve_params(JOB, None) == {"day": "2024-01-01", "full": "false", "note": ""}
    got = runner.resolve_params(JOB, {"day": dt.date(2024, 1, 5), "full": True, "note": None})
    assert got == {"day": "2024-01-05", "full": "true", "note": ""}  # strings, as Databricks passes them
    assert runner.resolve_params(JOB, {"note": 7})["note"] == "7"


def test_resolve_params_refuses_an_undeclared_parameter():
    with pytest.raises(
        ParameterError, match=r"job 'j' has no such parameter; its parameters: day, full, note"
    ) as info:
        runner.resolve_params(JOB, {"day": "2024-01-05", "dya": "2024-01-06"})
    assert info.value.name == "dya"


def test_resolve_params_of_a_job_without_parameters():
    with pytest.raises(ParameterError, match=r"its parameters: none"):
        runner.resolve_params(_job(TaskSpec("t")), {"x": 1})
    assert runner.resolve_params(_job(TaskSpec("t")), {}) == {}


def test_dynamic_value_references(tmp_path):
    spec = TaskSpec("load_orders")
    run = execution(_job(spec, parameters={"day": "2024-01-05"}), tmp_path, run_id="r-1")
    start = run.result.start
    assert run._dynamic("{{job.parameters.day}}", spec) == "2024-01-05"
    assert run._dynamic("{{ task.name }}/{{job.run_id}}", spec) == "load_orders/r-1"  # spaces allowed
    assert run._dynamic("{{job.id}}|{{job.name}}", spec) == "j|Job j"
    assert run._dynamic("{{job.start_time.iso_date}}", spec) == start.date().isoformat()
    assert run._dynamic("{{job.start_time.iso_datetime}}", spec) == start.isoformat()
    # Unknown references are left as written: the notebook sees the text.
    assert (
        run._dynamic("{{job.parameters.nope}} {{tasks.x.values.y}}", spec)
        == "{{job.parameters.nope}} {{tasks.x.values.y}}"
    )
    assert run._dynamic("no refs, {single} braces", spec) == "no refs, {single} braces"


def test_task_params_job_parameters_override_base_parameters(tmp_path):
    spec = TaskSpec(
        "t",
        base_parameters={"day": "1999-01-01", "label": "{{task.name}} on {{job.parameters.day}}", "k": "v"},
    )
    run = execution(_job(spec, parameters={"day": "2024-01-05"}), tmp_path, run_id="r-2")
    assert run._task_params(spec) == {
        "day": "2024-01-05",
        "label": "t on 2024-01-05",
        "k": "v",
        "env": "local",
        "run_id": "r-2",
        "task_key": "t",
    }


def test_child_params_refuse_a_parameter_the_child_lacks(tmp_path):
    child = _job(TaskSpec("inner"), key="child", parameters={"day": ""})
    spec = TaskSpec("call", run_job="child", run_job_parameters={"nope": "1"})
    run = execution(_job(spec, parameters={"day": "2024-01-05"}), tmp_path, jobs={"child": child})
    with pytest.raises(ParameterError, match=r"job 'child' has no such parameter"):
        run._child_params(spec)


# ----------------------------------------------------------------------------- run ids and records


def test_new_run_id_format():
    run_id = runner.new_run_id(dt.datetime(2024, 1, 5, 10, 30, 15, tzinfo=dt.UTC))
    assert re.fullmatch(r"20240105T103015-[0-9a-f]{6}", run_id)
    assert runner._RUN_ID.match(run_id)
    assert runner.new_run_id() != runner.new_run_id()


def test_load_run_of_an_unknown_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    with pytest.raises(ParameterError, match=r"no run 'nope'") as info:
        runner.load_run("nope")
    assert info.value.name == "run_id"


def test_notebook_tasks_counts_chained_jobs_once_per_task(tmp_path):
    nb = tmp_path / "x.ipynb"
    child = _job(TaskSpec("a", notebook_path=nb), TaskSpec("b", notebook_path=nb), key="child")
    parent = _job(
        TaskSpec("p", notebook_path=nb), TaskSpec("c1", run_job="child"), TaskSpec("c2", run_job="child")
    )
    bundle = Bundle(
        path=tmp_path / "b.yml",
        name="b",
        target=None,
        targets=(),
        variables={},
        jobs={"j": parent, "child": child},
    )
    assert runner._notebook_tasks(bundle, parent) == 5
    assert runner._notebook_tasks(bundle, child) == 2


# ----------------------------------------------------------------------------- critical path first


def _daily_transformation() -> JobSpec:
    """The shape of retail_transformation: dimension builds beside the clean -> fact chain."""
    return _job(
        TaskSpec("clean_customers"),
        TaskSpec("clean_products"),
        TaskSpec("clean_stores"),
        TaskSpec("clean_orders", depends_on=("clean_customers", "clean_stores")),
        TaskSpec("clean_order_items", depends_on=("clean_orders", "clean_products")),
        TaskSpec("clean_pos_transactions", depends_on=("clean_stores",)),
        TaskSpec("build_dim_date"),
        TaskSpec("build_dim_customer", depends_on=("clean_customers",)),
        TaskSpec("build_dim_product", depends_on=("clean_products",)),
        TaskSpec("build_dim_store", depends_on=("clean_stores",)),
        TaskSpec(
            "build_fact_sales",
            depends_on=(
                "clean_order_items",
                "build_dim_date",
                "build_dim_customer",
                "build_dim_product",
                "build_dim_store",
            ),
        ),
        TaskSpec("build_agg_daily_sales", depends_on=("build_fact_sales",)),
    )


def test_priorities_rank_the_longest_chain_first():
    rank = priorities(_daily_transformation())
    order = sorted(rank, key=rank.__getitem__)
    # clean_customers and clean_stores head 5-task chains (-> clean_orders -> clean_order_items -> fact
    # -> agg); clean_stores has more dependents; dimension builds and pos come after.
    assert order[:3] == ["clean_stores", "clean_customers", "clean_products"]
    assert order.index("clean_orders") < order.index("build_dim_customer")
    assert order.index("build_dim_date") < order.index("clean_pos_transactions")  # 3-chain before a leaf
    assert order[-2:] == ["clean_pos_transactions", "build_agg_daily_sales"]  # leaves, declared order


def test_priorities_keep_declaration_order_among_independent_tasks():
    job = _job(*(TaskSpec(k) for k in ("c", "a", "b")))
    rank = priorities(job)
    assert sorted(rank, key=rank.__getitem__) == ["c", "a", "b"]


def test_a_ready_task_on_the_critical_path_starts_before_side_branches(tmp_path, script):
    _, calls = script
    run = execution(_daily_transformation(), tmp_path, max_parallel=1).run()
    assert run.state == S
    started = [key for key, _ in calls]
    # With one slot, clean_orders is ready once clean_stores and clean_customers are done and goes
    # before every dimension build (declared order would start build_dim_date first).
    assert started[:2] == ["clean_stores", "clean_customers"]
    assert all(started.index("clean_orders") < started.index(k) for k in started if k.startswith("build_"))
    assert started[-3:] == [
        "build_fact_sales",
        "clean_pos_transactions",
        "build_agg_daily_sales",
    ]  # leaves last


def test_retries_wait_for_a_free_slot_and_keep_their_rank(tmp_path, script):
    outcomes, calls = script
    outcomes["a"] = [RuntimeError("boom"), None]
    job = _job(TaskSpec("a", max_retries=1), TaskSpec("b"), TaskSpec("c", depends_on=("a",)))
    run = execution(job, tmp_path, max_parallel=1).run()
    assert states(run) == {"a": [(1, F), (2, S)], "b": [(1, S)], "c": [(1, S)]}
    # a heads the longer chain: its retry takes the slot before b; then b and c are both leaves
    # (declared order). In declared order alone b would have run between a's attempts.
    assert [key for key, _ in calls] == ["a", "a", "b", "c"]
