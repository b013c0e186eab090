"""databricks.bundle: reading databricks.yml (variables, includes, targets, tasks) and reporting every problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from retail_lakehouse.core.errors import ConfigError, JobNotFoundError
from retail_lakehouse.databricks import bundle as bundle_mod
from retail_lakehouse.databricks.bundle import (
    RUN_IF,
    ClusterSpec,
    JobSpec,
    ScheduleSpec,
    TaskSpec,
    load_bundle,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "databricks_test.yml"


def write_bundle(
    root: Path, text: str, *, notebooks: tuple[str, ...] = ("nb/a.ipynb", "nb/b.ipynb", "nb/c.ipynb")
) -> Path:
    """A databricks.yml under `root` and the (empty) notebooks it names."""
    for nb in notebooks:
        path = root / nb
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    main = root / "databricks.yml"
    main.write_text(textwrap.dedent(text))
    return main


def problems(info: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    """The listed problems of a ConfigError from load_bundle (one per line after the header)."""
    return [line.strip() for line in str(info.value).splitlines()[1:]]


@pytest.fixture(autouse=True)
def _no_bundle_vars(monkeypatch):
    for name in ("BUNDLE_VAR_workers", "BUNDLE_VAR_catalog", "BUNDLE_VAR_x", "BUNDLE_VAR_default_x"):
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- the test fixture bundle


def test_fixture_bundle_with_its_default_target():
    b = load_bundle(FIXTURE)
    notebooks = FIXTURE.parent / "notebooks"
    assert (b.name, b.target, b.targets) == ("runner_tests", "local", ("local", "prod"))
    assert b.variables == {"default_x": "3", "workers": 4}  # the local target sets default_x
    assert list(b.jobs) == [
        "parallel_job",
        "params_job",
        "retry_job",
        "fail_job",
        "chain_job",
        "overhead_job",
    ]
    assert b.jobs["params_job"].parameters == {"x": "3", "expect_remote": ""}
    parallel = b.jobs["parallel_job"]
    # The target overrides num_workers only; the rest of the cluster is the job's.
    assert parallel.clusters["small"] == ClusterSpec(
        key="small",
        spark_version="15.4.x-scala2.12",
        node_type_id="Standard_DS3_v2",
        num_workers=1,
        autotermination_minutes=20,
    )
    # Notebook paths: relative to the YAML, `.ipynb` optional, `..` normalized.
    assert {t.task_key: t.notebook_path for t in parallel.tasks} == {
        "left": notebooks / "ok_query.ipynb",
        "right": notebooks / "ok_query.ipynb",
        "join": notebooks / "ok_query.ipynb",
    }
    assert parallel.task("join").depends_on == ("left", "right")
    assert b.jobs["chain_job"].task("run_params").run_job == "params_job"
    assert b.jobs["fail_job"].task("cleanup").run_if == "ALL_DONE"
    assert b.jobs["retry_job"].task("flaky").min_retry_interval_millis == 200
    assert b.jobs["overhead_job"].description.startswith("four trivial notebooks")


def test_fixture_bundle_with_another_target():
    b = load_bundle(FIXTURE, target="prod")
    assert b.target == "prod"
    assert b.variables == {"default_x": "2", "workers": 8}
    assert b.jobs["params_job"].parameters["x"] == "2"
    # ${var.workers} is the whole value: the number stays a number.
    assert b.jobs["parallel_job"].clusters["small"].num_workers == 8


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"no target 'staging'; known targets: local, prod"):
        load_bundle(FIXTURE, target="staging")


def test_job_by_key_or_name_and_unknown_job():
    b = load_bundle(FIXTURE)
    assert b.job("params_job") is b.job("Params job") is b.jobs["params_job"]
    with pytest.raises(
        JobNotFoundError, match=r"no job 'nope' in .*known jobs: chain_job, fail_job, overhead_job"
    ):
        b.job("nope")
    assert b.root == FIXTURE.parent


# ----------------------------------------------------------------------------- variables and substitution

VARIABLES = """\
bundle: {name: shop}
variables:
  catalog: {default: dev_catalog}
  schema: {default: "${var.catalog}_sales"}
  workers: {default: 2}
  flag: {default: true}
  x: {description: no default}
resources:
  jobs:
    j:
      name: "${bundle.name} on ${bundle.target}"
      job_clusters:
        - job_cluster_key: c
          new_cluster: {num_workers: "${var.workers}", spark_version: "${var.workers}.x", custom: "${workspace.root_path}"}
      parameters:
        - {name: table, default: "${var.schema}.orders"}
        - {name: flag, default: "${var.flag}"}
      tasks:
        - task_key: t
          job_cluster_key: c
          notebook_task: {notebook_path: nb/a.ipynb}
targets:
  dev: {default: true}
  prod:
    variables: {catalog: prod_catalog, workers: 16}
"""


def test_variables_defaults_references_and_bundle_context(tmp_path):
    b = load_bundle(write_bundle(tmp_path, VARIABLES))
    job = b.jobs["j"]
    assert b.target == "dev"
    assert job.name == "shop on dev"
    assert job.parameters == {
        "table": "dev_catalog_sales.orders",
        "flag": "true",
    }  # a default may use a variable
    cluster = job.clusters["c"]
    assert cluster.num_workers == 2  # whole value: typed
    assert cluster.spark_version == "2.x"  # inside text: text
    assert cluster.raw["custom"] == "${workspace.root_path}"  # not the runner's to resolve: left as written
    assert b.variables == {
        "catalog": "dev_catalog",
        "schema": "dev_catalog_sales",
        "workers": 2,
        "flag": True,
    }


def test_target_variables_then_environment_then_given_values_win(tmp_path, monkeypatch):
    main = write_bundle(tmp_path, VARIABLES)
    prod = load_bundle(main, target="prod")
    assert prod.jobs["j"].parameters["table"] == "prod_catalog_sales.orders"
    assert prod.jobs["j"].clusters["c"].num_workers == 16
    monkeypatch.setenv("BUNDLE_VAR_catalog", "env_catalog")
    assert load_bundle(main, target="prod").jobs["j"].parameters["table"] == "env_catalog_sales.orders"
    given = load_bundle(main, target="prod", variables={"catalog": "cli_catalog"})
    assert given.jobs["j"].parameters["table"] == "cli_catalog_sales.orders"
    assert given.variables["catalog"] == "cli_catalog"


def test_a_number_given_as_text_is_still_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("BUNDLE_VAR_workers", "8")
    cluster = load_bundle(write_bundle(tmp_path, VARIABLES)).jobs["j"].clusters["c"]
    assert cluster.num_workers == 8
    assert cluster.raw["num_workers"] == 8  # what job_runs.compute records
    assert cluster.spark_version == "8.x"  # inside text: still text
    given = load_bundle(write_bundle(tmp_path, VARIABLES), variables={"workers": "-3"})  # --var
    assert given.jobs["j"].clusters["c"].num_workers == -3


def test_a_boolean_given_as_text_is_still_a_boolean(tmp_path):
    text = VARIABLES.replace(
        "notebook_task: {notebook_path: nb/a.ipynb}",
        'notebook_task: {notebook_path: nb/a.ipynb}\n          retry_on_timeout: "${var.flag}"\n'
        '          max_retries: "${var.workers}"',
    )
    main = write_bundle(tmp_path, text)
    for flag, expected in (("false", False), ("no", False), ("TRUE", True), ("on", True)):
        task = load_bundle(main, variables={"flag": flag, "workers": "3"}).jobs["j"].task("t")
        assert (task.retry_on_timeout, task.max_retries) == (expected, 3)


def test_text_that_is_not_the_fields_type_is_a_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("BUNDLE_VAR_workers", "8.5")
    with pytest.raises(ConfigError) as info:
        load_bundle(write_bundle(tmp_path, VARIABLES))
    assert problems(info) == [
        "resources.jobs.j.job_clusters[0].new_cluster.num_workers: variable 'workers' gives '8.5', but "
        "num_workers takes a whole number; set it (BUNDLE_VAR_<name>, --var, target or default) to one"
    ]


def test_a_target_may_only_set_declared_variables(tmp_path):
    text = VARIABLES.replace("variables: {catalog: prod_catalog, workers: 16}", "variables: {warehouse: w1}")
    with pytest.raises(
        ConfigError, match=r"target sets variable 'warehouse' that is not declared under `variables:`"
    ):
        load_bundle(write_bundle(tmp_path, text), target="prod")


def test_unknown_and_valueless_variables_are_problems(tmp_path):
    text = VARIABLES.replace('"${var.schema}.orders"', '"${var.schemaa}.orders"').replace(
        'default: "${var.flag}"', 'default: "${var.x}"'
    )
    with pytest.raises(ConfigError) as info:
        load_bundle(write_bundle(tmp_path, text))
    assert "has 2 problem(s)" in str(info.value).splitlines()[0]
    assert problems(info) == [
        "resources.jobs.j.parameters[0].default: unknown variable ${var.schemaa}; declared: catalog, schema, "
        "workers, flag, x",
        "resources.jobs.j.parameters[1].default: variable 'x' has no value; set a default, a target value or --var",
    ]


def test_a_bundle_without_targets_takes_any_target_name(tmp_path):
    text = VARIABLES.split("targets:")[0]
    b = load_bundle(write_bundle(tmp_path, text), target="local")
    assert (b.target, b.targets) == ("local", ())
    assert b.jobs["j"].name == "shop on local"
    assert load_bundle(write_bundle(tmp_path, text)).jobs["j"].name == "shop on "  # no target at all


def test_the_name_defaults_to_the_folder(tmp_path):
    root = tmp_path / "my_project"
    text = "resources:\n  jobs:\n    j:\n      tasks:\n        - {task_key: t, notebook_task: {notebook_path: nb/a}}\n"
    b = load_bundle(write_bundle(root, text))
    assert b.name == "my_project"
    assert b.jobs["j"].name == "j"  # a job's name defaults to its key
    assert b.jobs["j"].task("t").notebook_path == root / "nb" / "a.ipynb"


# ----------------------------------------------------------------------------- includes and target overrides


def test_includes_merge_resources_and_resolve_notebooks_next_to_their_file(tmp_path):
    main = write_bundle(
        tmp_path,
        """\
        bundle: {name: shop}
        include: [resources/*.yml]
        variables:
          catalog: {default: main}
        resources:
          jobs:
            main_job:
              tasks:
                - {task_key: t, notebook_task: {notebook_path: nb/a.ipynb}}
        """,
        notebooks=("nb/a.ipynb", "resources/nb/local.ipynb"),
    )
    (tmp_path / "resources" / "extra.yml").write_text(
        textwrap.dedent(
            """\
            variables:
              suffix: {default: _x}
            resources:
              jobs:
                extra_job:
                  parameters: [{name: p, default: "${var.catalog}${var.suffix}"}]
                  tasks:
                    - {task_key: e, notebook_task: {notebook_path: nb/local.ipynb}}
            targets:
              qa: {variables: {suffix: _qa}}
            """
        )
    )
    b = load_bundle(main)
    assert sorted(b.jobs) == ["extra_job", "main_job"]
    assert b.jobs["extra_job"].task("e").notebook_path == tmp_path / "resources" / "nb" / "local.ipynb"
    assert b.jobs["extra_job"].parameters == {"p": "main_x"}
    assert b.targets == ("qa",)
    assert load_bundle(main, target="qa").jobs["extra_job"].parameters == {"p": "main_qa"}


OVERRIDES = """\
bundle: {name: shop}
resources:
  jobs:
    j:
      parameters:
        - {name: a, default: "1"}
        - {name: b, default: "2"}
      job_clusters:
        - job_cluster_key: c
          new_cluster: {spark_version: "15.4", node_type_id: small, num_workers: 2}
      tasks:
        - task_key: first
          job_cluster_key: c
          max_retries: 1
          notebook_task: {notebook_path: nb/a.ipynb, base_parameters: {k: v, keep: "yes"}}
        - task_key: second
          depends_on: [{task_key: first}]
          notebook_task: {notebook_path: nb/b.ipynb}
targets:
  prod:
    resources:
      jobs:
        j:
          description: production
          parameters:
            - {name: b, default: "20"}
            - {name: c, default: "30"}
          job_clusters:
            - job_cluster_key: c
              new_cluster: {autoscale: {min_workers: 2, max_workers: 8}}
          tasks:
            - task_key: first
              max_retries: 5
              notebook_task: {base_parameters: {k: prod_v}}
            - task_key: third
              depends_on: [{task_key: second}]
              notebook_task: {notebook_path: nb/c.ipynb}
"""


def test_target_overrides_merge_lists_by_their_keys(tmp_path):
    main = write_bundle(tmp_path, OVERRIDES)
    base = load_bundle(main).jobs["j"]
    assert base.parameters == {"a": "1", "b": "2"}
    assert [t.task_key for t in base.tasks] == ["first", "second"]
    prod = load_bundle(main, target="prod").jobs["j"]
    assert prod.description == "production"
    assert prod.parameters == {"a": "1", "b": "20", "c": "30"}  # by name, declaration order kept
    assert [t.task_key for t in prod.tasks] == ["first", "second", "third"]  # by task_key, new ones appended
    first = prod.task("first")
    assert first.max_retries == 5
    assert first.base_parameters == {"k": "prod_v", "keep": "yes"}  # mappings deep-merged
    assert first.notebook_path == tmp_path / "nb" / "a.ipynb"
    cluster = prod.clusters["c"]
    assert (cluster.spark_version, cluster.node_type_id, cluster.num_workers, cluster.autoscale) == (
        "15.4",
        "small",
        2,
        (2, 8),
    )


# ----------------------------------------------------------------------------- tasks


TASKS = """\
bundle: {name: shop}
resources:
  jobs:
    j:
      job_clusters:
        - {job_cluster_key: c, new_cluster: {num_workers: 1}}
      schedule: {quartz_cron_expression: "0 0 2 * * ?", timezone_id: Europe/Berlin}
      tasks:
        - task_key: load
          max_retries: 2
          min_retry_interval_millis: 1500
          retry_on_timeout: true
          timeout_seconds: 600
          job_cluster_key: c
          notebook_task: {notebook_path: nb/a.ipynb, base_parameters: {n: 3, yes_flag: true, no_flag: false, none: null}}
        - task_key: report
          depends_on: [load]
          run_if: ALL_DONE
          timeout_seconds: 0
          existing_cluster_id: 0123-abc
          notebook_task: {notebook_path: nb/b.ipynb}
        - task_key: chained
          depends_on: [{task_key: load}]
          run_if: AT_LEAST_ONE_FAILED
          run_job_task:
            job_id: ${resources.jobs.other.id}
            job_parameters: {day: "{{job.parameters.day}}", n: 1}
    other:
      tasks:
        - {task_key: o, notebook_task: {notebook_path: nb/c.ipynb}}
"""


def test_task_fields(tmp_path):
    b = load_bundle(write_bundle(tmp_path, TASKS))
    job = b.jobs["j"]
    load, report, chained = job.tasks
    assert load == TaskSpec(
        task_key="load",
        notebook_path=tmp_path / "nb" / "a.ipynb",
        base_parameters={
            "n": "3",
            "yes_flag": "true",
            "no_flag": "false",
            "none": "",
        },  # as Databricks passes them
        max_retries=2,
        min_retry_interval_millis=1500,
        retry_on_timeout=True,
        timeout_seconds=600,
        job_cluster_key="c",
    )
    assert (report.depends_on, report.run_if, report.timeout_seconds, report.max_retries) == (
        ("load",),
        "ALL_DONE",
        None,  # 0 is no limit
        None,  # not declared: the runner's default
    )
    assert report.retry_on_timeout is False and report.min_retry_interval_millis is None
    assert (chained.run_job, chained.run_job_parameters, chained.notebook_path) == (
        "other",
        {"day": "{{job.parameters.day}}", "n": "1"},
        None,
    )
    assert job.schedule == ScheduleSpec("0 0 2 * * ?", "Europe/Berlin", "UNPAUSED")
    assert b.jobs["other"].schedule is None
    assert b.jobs["other"].task("o").run_if == "ALL_SUCCESS"
    assert job.compute(load) == {"job_cluster_key": "c", "num_workers": 1}
    assert job.compute(report) == {"existing_cluster_id": "0123-abc"}
    assert job.compute(chained) == {"run_job": "other"}
    assert b.jobs["other"].compute(b.jobs["other"].task("o")) == {"serverless": True}


@pytest.mark.parametrize("rule", RUN_IF)
def test_every_run_if_rule_is_accepted(tmp_path, rule):
    text = TASKS.replace("run_if: ALL_DONE", f"run_if: {rule}")
    assert load_bundle(write_bundle(tmp_path, text)).jobs["j"].task("report").run_if == rule


def test_unknown_task_is_a_config_error():
    job = JobSpec(key="j", name="j", parameters={}, tasks=(TaskSpec("a"), TaskSpec("b")))
    with pytest.raises(ConfigError, match=r"job 'j' has no task 'c'; its tasks: a, b"):
        job.task("c")


def _job(*tasks: TaskSpec) -> JobSpec:
    return JobSpec(key="j", name="j", parameters={}, tasks=tasks)


def test_topological_order_puts_dependencies_first_and_keeps_declaration_order():
    job = _job(
        TaskSpec("report", depends_on=("aggregate", "quality")),
        TaskSpec("aggregate", depends_on=("fact",)),
        TaskSpec("dims"),
        TaskSpec("fact", depends_on=("dims",)),
        TaskSpec("quality", depends_on=("dims",)),
        TaskSpec("notify"),
    )
    assert [t.task_key for t in job.topological_order()] == [
        "dims",
        "notify",
        "fact",
        "quality",
        "aggregate",
        "report",
    ]


def test_topological_order_of_a_cycle_raises():
    job = _job(TaskSpec("a", depends_on=("b",)), TaskSpec("b", depends_on=("a",)), TaskSpec("c"))
    with pytest.raises(ConfigError, match=r"tasks \['a', 'b'\] form a cycle"):
        job.topological_order()


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": ["b"], "b": ["c"], "c": []}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"x": [], "a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None),  # a diamond is no cycle
    ],
)
def test_find_cycle(graph, cycle):
    assert bundle_mod._find_cycle(graph) == cycle


def test_param_str():
    assert [bundle_mod.param_str(v) for v in (None, True, False, 3, 1.5, "x")] == [
        "",
        "true",
        "false",
        "3",
        "1.5",
        "x",
    ]


# ----------------------------------------------------------------------------- bad bundles: every problem at once


BAD = """\
bundle: {name: shop}
resources:
  jobs:
    j:
      parameters:
        - {default: "no name"}
      tasks:
        - task_key: "bad key!"
          notebook_task: {notebook_path: nb/a.ipynb}
        - task_key: a
          run_if: SOMETIMES
          job_cluster_key: missing
          notebook_task: {notebook_path: nb/nowhere.ipynb}
        - task_key: a
          notebook_task: {notebook_path: nb/a.ipynb}
        - task_key: b
          depends_on: [{task_key: ghost}]
          notebook_task: {}
        - task_key: c
          spark_python_task: {python_file: x.py}
        - task_key: d
          run_job_task: {job_id: 123}
        - task_key: e
          depends_on: [f]
          notebook_task: {notebook_path: nb/a.ipynb}
        - task_key: f
          depends_on: [e]
          notebook_task: {notebook_path: nb/a.ipynb}
    empty:
      name: Empty
    ping:
      tasks:
        - {task_key: call, run_job_task: {job_id: "${resources.jobs.pong.id}"}}
        - {task_key: lost, run_job_task: {job_id: "${resources.jobs.nowhere.id}"}}
    pong:
      tasks:
        - {task_key: call, run_job_task: {job_id: "${resources.jobs.ping.id}"}}
"""


def test_a_bad_bundle_reports_every_problem_at_once(tmp_path):
    main = write_bundle(tmp_path, BAD)
    with pytest.raises(ConfigError) as info:
        load_bundle(main)
    header = str(info.value).splitlines()[0]
    assert header == f"{main} (target -) has 14 problem(s):"
    nowhere = tmp_path / "nb" / "nowhere.ipynb"
    assert problems(info) == [
        "job 'j': each parameter needs `name` and `default`",
        "job 'j': task_key 'bad key!' must be letters, digits, '-' and '_'",
        "job 'j', task 'a': run_if 'SOMETIMES' is not one of " + ", ".join(RUN_IF),
        f"job 'j', task 'a': notebook {nowhere} does not exist",
        "job 'j', task 'a': job_cluster_key 'missing' is not in the job's job_clusters",
        "job 'j': duplicate task_key 'a'",
        "job 'j', task 'b': notebook_task has no notebook_path",
        "job 'j', task 'c': the local runner runs notebook_task and run_job_task tasks only",
        "job 'j', task 'd': run_job_task.job_id must be ${resources.jobs.<key>.id} (a job of this bundle), not 123",
        "job 'j', task 'b': depends_on unknown task 'ghost'; tasks: a, b, c, d, e, f",
        "job 'j': tasks depend on each other in a cycle: e -> f -> e",
        "job 'empty': has no tasks",
        "job 'ping', task 'lost': run_job_task names unknown job 'nowhere'; jobs: empty, j, ping, pong",
        "jobs run each other in a cycle through run_job_task: ping -> pong -> ping",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("jobs: [unclosed", "is not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_unreadable_bundle_files(tmp_path, content, message):
    main = tmp_path / "databricks.yml"
    main.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_bundle(main)


def test_a_missing_bundle_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no bundle file .*nothing\.yml; create databricks.yml"):
        load_bundle(tmp_path / "nothing.yml")


def test_a_bad_included_file_is_named(tmp_path):
    main = write_bundle(tmp_path, "include: [more.yml]\nresources: {}\n")
    (tmp_path / "more.yml").write_text("resources: [oops")
    with pytest.raises(ConfigError, match=r"more\.yml is not valid YAML"):
        load_bundle(main)


def test_the_default_bundle_path_follows_lakehouse_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_BUNDLE", str(FIXTURE))
    assert bundle_mod.default_bundle_path() == FIXTURE
    assert load_bundle().name == "runner_tests"
    monkeypatch.delenv("LAKEHOUSE_BUNDLE")
    assert bundle_mod.default_bundle_path().name == "databricks.yml"


# ----------------------------------------------------------------------------- notifications (issue 14)


@pytest.mark.parametrize(
    ("target", "email", "failure", "warning"),
    [
        ("local", "oncall@localhost", "local-alerts-webhook", "local-alerts-webhook"),
        ("dev", "retail-data-dev@example.com", "retail-dev-slack", "retail-dev-slack"),
        ("prod", "retail-data-oncall@example.com", "retail-prod-pagerduty", "retail-prod-slack"),
    ],
)
def test_every_job_notifies_on_failure_and_duration_per_target(target, email, failure, warning):
    from databricks.sdk.service.jobs import JobSettings

    from retail_lakehouse.databricks.deploy import _raw, job_settings
    from retail_lakehouse.databricks.job_settings import settings_diff

    b = load_bundle(target=target)
    raw_jobs, _ = _raw(b)
    assert list(raw_jobs) == list(b.jobs)  # order kept: `lakehouse onboard` appends tasks in place
    for key, job in b.jobs.items():
        settings = job_settings(job, target, "/Workspace/x", b.path.parent, lambda _: 1, raw_jobs[key])
        assert settings["email_notifications"] == {
            "on_failure": [email],
            "on_duration_warning_threshold_exceeded": [email],
        }, key
        assert settings["webhook_notifications"] == {
            "on_failure": [{"id": failure}],
            "on_duration_warning_threshold_exceeded": [{"id": warning}],
        }, key
        (rule,) = settings["health"]["rules"]
        assert rule["metric"] == "RUN_DURATION_SECONDS" and rule["op"] == "GREATER_THAN" and rule["value"] > 0
        # the SDK models them (what the deploy sends) and a redeploy sees no difference
        typed = JobSettings.from_dict(settings).as_dict()
        assert typed["webhook_notifications"]["on_failure"][0]["id"] == failure
        assert settings_diff(settings, typed, "") == [], key


def test_notification_ids_come_from_variables_not_secrets():
    text = (Path(__file__).resolve().parents[2] / "databricks.yml").read_text()
    assert "hooks.slack.com" not in text and "routing_key" not in text
    b = load_bundle(target="qa", variables={"failure_destination_id": "0b1c-given"})
    from retail_lakehouse.databricks.deploy import _raw

    raw_jobs, _ = _raw(b)
    assert raw_jobs["retail_daily"]["webhook_notifications"]["on_failure"] == [{"id": "0b1c-given"}]
