"""The jobs of `databricks.yml` (Databricks Asset Bundle format), read and validated for the local runner.

What is read: `bundle.name`, `include` (globs of more YAML files), `variables`, `resources.jobs`
(name, parameters, job_clusters, tasks, schedule) and `targets` (per-target `variables` and
`resources` overrides, merged as the Databricks CLI does: mappings deep-merged, `tasks`,
`job_clusters` and `parameters` merged by their key). `${var.x}`, `${bundle.target}` and
`${bundle.name}` are substituted; `${resources.jobs.<key>.id}` in a `run_job_task` names a job of
the bundle. Notebook paths are relative to the YAML file that declares them, as in a bundle.

The whole bundle is validated at load and every problem is reported at once.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.core.errors import ConfigError, JobNotFoundError

__all__ = ["Bundle", "ClusterSpec", "JobSpec", "ScheduleSpec", "TaskSpec", "load_bundle"]

RUN_IF = (
    "ALL_SUCCESS",
    "ALL_DONE",
    "NONE_FAILED",
    "AT_LEAST_ONE_SUCCESS",
    "ALL_FAILED",
    "AT_LEAST_ONE_FAILED",
)

_REF = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
_JOB_ID_REF = re.compile(r"^\$\{resources\.jobs\.([A-Za-z0-9_\-]+)\.id\}$")
_TASK_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
# Lists merged element-wise by a key when a target overrides them (as the Databricks CLI does).
_KEYED_LISTS = {"tasks": "task_key", "job_clusters": "job_cluster_key", "parameters": "name"}
# Fields read as numbers or booleans: text from variables (BUNDLE_VAR_<name>, --var) is converted as the
# Databricks CLI types a bundle: base-10 integers, its YAML boolean words (+ True/TRUE/False/FALSE).
_TYPED_FIELDS: dict[str, type] = {
    **dict.fromkeys(("num_workers", "min_workers", "max_workers", "autotermination_minutes"), int),
    **dict.fromkeys(("max_retries", "min_retry_interval_millis", "timeout_seconds"), int),
    "retry_on_timeout": bool,
}
_INT_TEXT = re.compile(r"^[+-]?[0-9]+$")
_BOOLS = dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"), True)
_BOOLS |= dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"), False)


@dataclass(frozen=True)
class ClusterSpec:
    """A job cluster (`job_clusters[].new_cluster`) after target overrides.

    Attributes:
        key: `job_cluster_key`.
        spark_version: Databricks Runtime version, e.g. ``15.4.x-scala2.12``.
        node_type_id: VM type.
        num_workers: fixed size (None with autoscale).
        autoscale: ``(min_workers, max_workers)`` or None.
        autotermination_minutes: idle minutes before termination (None: not set).
        raw: the whole `new_cluster` mapping.
    """

    key: str
    spark_version: str | None = None
    node_type_id: str | None = None
    num_workers: int | None = None
    autoscale: tuple[int, int] | None = None
    autotermination_minutes: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what `job_runs.compute` holds)."""
        return {"job_cluster_key": self.key, **self.raw}


@dataclass(frozen=True)
class ScheduleSpec:
    """A job's `schedule`: Quartz cron expression, time zone and pause status."""

    quartz_cron_expression: str
    timezone_id: str = "UTC"
    pause_status: str = "UNPAUSED"


@dataclass(frozen=True)
class TaskSpec:
    """One task of a job: a notebook task or a run-job task.

    Attributes:
        task_key: unique within the job.
        notebook_path: absolute local path of the `.ipynb` (None for a run-job task).
        base_parameters: notebook parameters of the task (job parameters override them).
        depends_on: task keys this task waits for.
        run_if: Databricks run-if condition (default ``ALL_SUCCESS``).
        run_job: job key a `run_job_task` runs (None for a notebook task).
        run_job_parameters: `run_job_task.job_parameters`.
        max_retries: declared retries (None: the runner's default).
        min_retry_interval_millis: declared wait before the first retry (None: the runner's default).
        retry_on_timeout: retry a task that timed out.
        timeout_seconds: limit per notebook cell locally (None: no limit).
        job_cluster_key: cluster of the task, from the job's `job_clusters`.
        existing_cluster_id: an all-purpose cluster instead.
    """

    task_key: str
    notebook_path: Path | None = None
    base_parameters: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    run_if: str = "ALL_SUCCESS"
    run_job: str | None = None
    run_job_parameters: dict[str, str] = field(default_factory=dict)
    max_retries: int | None = None
    min_retry_interval_millis: int | None = None
    retry_on_timeout: bool = False
    timeout_seconds: int | None = None
    job_cluster_key: str | None = None
    existing_cluster_id: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """One job of the bundle.

    Attributes:
        key: the key under `resources.jobs`.
        name: the job's `name` (defaults to the key).
        parameters: job parameters and their defaults, in declaration order.
        tasks: tasks in declaration order.
        clusters: job clusters by `job_cluster_key`.
        schedule: the schedule, if any.
        description: the job's description.
    """

    key: str
    name: str
    parameters: dict[str, str]
    tasks: tuple[TaskSpec, ...]
    clusters: dict[str, ClusterSpec] = field(default_factory=dict)
    schedule: ScheduleSpec | None = None
    description: str = ""

    def task(self, task_key: str) -> TaskSpec:
        for task in self.tasks:
            if task.task_key == task_key:
                return task
        raise ConfigError(
            f"job {self.key!r} has no task {task_key!r}; its tasks: {', '.join(t.task_key for t in self.tasks)}"
        )

    def topological_order(self) -> list[TaskSpec]:
        """Tasks so that each comes after the tasks it depends on (declaration order among equals)."""
        done: set[str] = set()
        order: list[TaskSpec] = []
        remaining = list(self.tasks)
        while remaining:
            ready = [t for t in remaining if set(t.depends_on) <= done]
            if not ready:  # validated at load; defensive
                raise ConfigError(f"job {self.key!r}: tasks {[t.task_key for t in remaining]} form a cycle")
            for t in ready:
                order.append(t)
                done.add(t.task_key)
            remaining = [t for t in remaining if t.task_key not in done]
        return order

    def compute(self, task: TaskSpec) -> dict[str, Any]:
        """JSON-ready description of the compute a task runs on."""
        if task.run_job:
            return {"run_job": task.run_job}
        if task.existing_cluster_id:
            return {"existing_cluster_id": task.existing_cluster_id}
        if task.job_cluster_key and task.job_cluster_key in self.clusters:
            return self.clusters[task.job_cluster_key].to_dict()
        return {"serverless": True}


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle.

    Attributes:
        path: the main YAML file.
        name: `bundle.name`.
        target: the target applied (None: no target overrides).
        targets: every target the bundle declares.
        variables: resolved variable values.
        jobs: jobs by key.
    """

    path: Path
    name: str
    target: str | None
    targets: tuple[str, ...]
    variables: dict[str, Any]
    jobs: dict[str, JobSpec]

    @property
    def root(self) -> Path:
        return self.path.parent

    def job(self, name: str) -> JobSpec:
        """A job by key or by `name`.

        Raises:
            JobNotFoundError: no such job; the message lists the known ones.
        """
        if name in self.jobs:
            return self.jobs[name]
        for job in self.jobs.values():
            if job.name == name:
                return job
        known = ", ".join(sorted(self.jobs)) or "(none)"
        raise JobNotFoundError(f"no job {name!r} in {self.path}; known jobs: {known}")


# ----------------------------------------------------------------------------- loading


def default_bundle_path() -> Path:
    """`LAKEHOUSE_BUNDLE` if set, else `databricks.yml` at the project root."""
    return Path(os.environ.get("LAKEHOUSE_BUNDLE", PROJECT_ROOT / "databricks.yml"))


def load_bundle(
    path: str | Path | None = None, target: str | None = None, *, variables: dict[str, Any] | None = None
) -> Bundle:
    """Read, merge and validate a bundle.

    Args:
        path: the main YAML file (default `databricks.yml` at the project root).
        target: target whose overrides apply (default: the target marked `default: true`, if any).
            A target the bundle does not declare is an error, unless the bundle declares none.
        variables: variable values that win over everything (as `--var` does).

    Returns:
        The bundle, with variables substituted and notebook paths absolute.

    Raises:
        ConfigError: unreadable YAML, unknown target or variable, or invalid jobs (all problems listed).
    """
    path = (Path(path) if path else default_bundle_path()).resolve()
    if not path.is_file():
        raise ConfigError(f"no bundle file {path}; create databricks.yml or pass the path of one")
    raw = _read(path)
    for pattern in raw.get("include") or []:
        for inc in sorted(glob.glob(str(path.parent / pattern))):
            extra = _read(Path(inc))
            for section in ("resources", "targets", "variables"):
                if section in extra:
                    raw[section] = _merge(raw.get(section) or {}, extra[section])

    targets = raw.get("targets") or {}
    if target is None:
        target = next((name for name, t in targets.items() if (t or {}).get("default")), None)
    elif targets and target not in targets:
        raise ConfigError(f"{path}: no target {target!r}; known targets: {', '.join(targets)}")
    tdef = (targets.get(target) or {}) if target else {}
    resources = raw.get("resources") or {}
    if tdef.get("resources"):
        resources = _merge(resources, tdef["resources"])

    name = str((raw.get("bundle") or {}).get("name") or path.parent.name)
    values = _variables(path, raw.get("variables") or {}, tdef.get("variables") or {}, variables or {})
    context = {"bundle.target": target or "", "bundle.name": name}
    problems: list[str] = []
    resources = _substitute(resources, values, context, problems, "resources")
    jobs: dict[str, JobSpec] = {}
    for key, job_raw in ((resources or {}).get("jobs") or {}).items():
        jobs[key] = _job(str(key), job_raw or {}, problems)
    _validate_chains(jobs, problems)
    if problems:
        raise ConfigError(
            f"{path} (target {target or '-'}) has {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    resolved = {k: v for k, v in values.items() if v is not None}
    return Bundle(path=path, name=name, target=target, targets=tuple(targets), variables=resolved, jobs=jobs)


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping (bundle:, resources:, targets:)")
    _absolutize_notebooks(raw, path.parent)
    return raw


def _absolutize_notebooks(node: Any, base: Path) -> None:
    """Make `notebook_path`s absolute relative to the file that declares them (before merging files)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "notebook_path" and isinstance(value, str) and not value.startswith(("/", "${")):
                node[key] = str(base / value)
            else:
                _absolutize_notebooks(value, base)
    elif isinstance(node, list):
        for item in node:
            _absolutize_notebooks(item, base)


def _merge(base: Any, override: Any) -> Any:
    """Deep merge as the Databricks CLI merges target overrides."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if key in _KEYED_LISTS and isinstance(value, list) and isinstance(out.get(key), list):
                out[key] = _merge_keyed(out[key], value, _KEYED_LISTS[key])
            else:
                out[key] = _merge(out[key], value) if key in out else value
        return out
    return override


def _merge_keyed(base: list[Any], override: list[Any], key: str) -> list[Any]:
    out = list(base)
    index = {item.get(key): i for i, item in enumerate(out) if isinstance(item, dict)}
    for item in override:
        k = item.get(key) if isinstance(item, dict) else None
        if k is not None and k in index:
            out[index[k]] = _merge(out[index[k]], item)
        else:
            out.append(item)
    return out


def _variables(
    path: Path, declared: dict[str, Any], target_values: dict[str, Any], given: dict[str, Any]
) -> dict[str, Any]:
    """Variable values; precedence as the CLI: given (--var) > BUNDLE_VAR_<name> > target > default."""
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        values[name] = spec.get("default") if isinstance(spec, dict) else spec
    for name, value in target_values.items():
        if name not in declared:
            raise ConfigError(
                f"{path}: target sets variable {name!r} that is not declared under `variables:`"
            )
        values[name] = value.get("default") if isinstance(value, dict) else value
    for name in declared:
        if f"BUNDLE_VAR_{name}" in os.environ:
            values[name] = os.environ[f"BUNDLE_VAR_{name}"]
    values.update(given)
    # Defaults may refer to other variables.
    for _ in range(10):
        changed = False
        for name, value in values.items():
            if isinstance(value, str) and "${var." in value:
                new = _REF.sub(lambda m: _lookup_var(m, values), value)
                changed |= new != value
                values[name] = new
        if not changed:
            break
    return values


def _lookup_var(m: re.Match[str], values: dict[str, Any]) -> str:
    ref = m.group(1)
    if ref.startswith("var.") and values.get(ref[4:]) is not None and "${" not in str(values[ref[4:]]):
        return str(values[ref[4:]])
    return m.group(0)


def _substitute(
    node: Any, values: dict[str, Any], context: dict[str, str], problems: list[str], where: str
) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values, context, problems, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, context, problems, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def one(m: re.Match[str]) -> Any:
        ref = m.group(1)
        if ref.startswith("var."):
            name = ref[4:]
            if name not in values:
                problems.append(
                    f"{where}: unknown variable ${{{ref}}}; declared: {', '.join(values) or '(none)'}"
                )
            elif values[name] is None:
                problems.append(
                    f"{where}: variable {name!r} has no value; set a default, a target value or --var"
                )
            else:
                return values[name]
            return m.group(0)
        return context.get(ref, m.group(0))  # ${resources...}, ${workspace...} stay as written

    whole = _REF.fullmatch(node)  # keep the variable's type (numbers, booleans) when it is the whole value
    value = one(whole) if whole else _REF.sub(lambda m: str(one(m)), node)
    kind = _TYPED_FIELDS.get(where.split(".")[-1]) if isinstance(value, str) and "${" not in value else None
    return _typed(value, kind, node, where, problems) if kind else value


def _typed(text: str, kind: type, written: str, where: str, problems: list[str]) -> Any:
    """Variable text as a typed field's type, or a problem naming the variable, field and value."""
    if kind is int and _INT_TEXT.match(text):
        return int(text)
    if kind is bool and text in _BOOLS:
        return _BOOLS[text]
    names = [repr(m.group(1)[4:]) for m in _REF.finditer(written) if m.group(1).startswith("var.")]
    source = f"variable{'s' * (len(names) > 1)} {', '.join(names)}" if names else repr(written)
    expected = "a whole number" if kind is int else "a boolean (true or false)"
    problems.append(f"{where}: {source} gives {text!r}, but {where.rsplit('.', 1)[-1]} takes {expected}; "
                    "set it (BUNDLE_VAR_<name>, --var, target or default) to one")
    return written


# ----------------------------------------------------------------------------- jobs


def param_str(value: Any) -> str:
    """A parameter value as Databricks passes it (always a string; booleans as ``true``/``false``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _job(key: str, raw: dict[str, Any], problems: list[str]) -> JobSpec:
    where = f"job {key!r}"
    parameters: dict[str, str] = {}
    for p in raw.get("parameters") or []:
        if not isinstance(p, dict) or "name" not in p:
            problems.append(f"{where}: each parameter needs `name` and `default`")
            continue
        parameters[str(p["name"])] = param_str(p.get("default"))
    clusters: dict[str, ClusterSpec] = {}
    for c in raw.get("job_clusters") or []:
        ckey = str(c.get("job_cluster_key", ""))
        nc = dict(c.get("new_cluster") or {})
        auto = nc.get("autoscale")
        clusters[ckey] = ClusterSpec(
            key=ckey,
            spark_version=nc.get("spark_version"),
            node_type_id=nc.get("node_type_id"),
            num_workers=nc.get("num_workers"),
            autoscale=(int(auto.get("min_workers", 1)), int(auto.get("max_workers", 1))) if auto else None,
            autotermination_minutes=nc.get("autotermination_minutes"),
            raw=nc,
        )
    tasks: list[TaskSpec] = []
    seen: set[str] = set()
    for t in raw.get("tasks") or []:
        task = _task(key, t or {}, clusters, problems)
        if task is None:
            continue
        if task.task_key in seen:
            problems.append(f"{where}: duplicate task_key {task.task_key!r}")
            continue
        seen.add(task.task_key)
        tasks.append(task)
    if not tasks:
        problems.append(f"{where}: has no tasks")
    for task in tasks:
        for dep in task.depends_on:
            if dep not in seen:
                problems.append(
                    f"{where}, task {task.task_key!r}: depends_on unknown task {dep!r}; tasks: {', '.join(sorted(seen))}"
                )
    cycle = _find_cycle({t.task_key: [d for d in t.depends_on if d in seen] for t in tasks})
    if cycle:
        problems.append(f"{where}: tasks depend on each other in a cycle: {' -> '.join(cycle)}")
    sched = raw.get("schedule")
    schedule = None
    if isinstance(sched, dict) and sched.get("quartz_cron_expression"):
        schedule = ScheduleSpec(
            quartz_cron_expression=str(sched["quartz_cron_expression"]),
            timezone_id=str(sched.get("timezone_id", "UTC")),
            pause_status=str(sched.get("pause_status", "UNPAUSED")),
        )
    return JobSpec(
        key=key,
        name=str(raw.get("name") or key),
        parameters=parameters,
        tasks=tuple(tasks),
        clusters=clusters,
        schedule=schedule,
        description=str(raw.get("description") or ""),
    )


def _task(
    job: str, t: dict[str, Any], clusters: dict[str, ClusterSpec], problems: list[str]
) -> TaskSpec | None:
    task_key = str(t.get("task_key") or "")
    where = f"job {job!r}, task {task_key!r}"
    if not _TASK_KEY.match(task_key):
        problems.append(f"job {job!r}: task_key {task_key!r} must be letters, digits, '-' and '_'")
        return None
    deps = tuple(str(d["task_key"]) if isinstance(d, dict) else str(d) for d in t.get("depends_on") or [])
    run_if = str(t.get("run_if") or "ALL_SUCCESS")
    if run_if not in RUN_IF:
        problems.append(f"{where}: run_if {run_if!r} is not one of {', '.join(RUN_IF)}")
    notebook: Path | None = None
    base: dict[str, str] = {}
    run_job: str | None = None
    run_job_params: dict[str, str] = {}
    if "notebook_task" in t:
        nt = t["notebook_task"] or {}
        notebook = _notebook(str(nt.get("notebook_path") or ""), where, problems)
        base = {str(k): param_str(v) for k, v in (nt.get("base_parameters") or {}).items()}
    elif "run_job_task" in t:
        rt = t["run_job_task"] or {}
        m = _JOB_ID_REF.match(str(rt.get("job_id", "")))
        if not m:
            problems.append(
                f"{where}: run_job_task.job_id must be ${{resources.jobs.<key>.id}} (a job of this bundle), "
                f"not {rt.get('job_id')!r}"
            )
        else:
            run_job = m.group(1)
        run_job_params = {str(k): param_str(v) for k, v in (rt.get("job_parameters") or {}).items()}
    else:
        problems.append(f"{where}: the local runner runs notebook_task and run_job_task tasks only")
    cluster_key = t.get("job_cluster_key")
    if cluster_key and cluster_key not in clusters:
        problems.append(f"{where}: job_cluster_key {cluster_key!r} is not in the job's job_clusters")
    max_retries = t.get("max_retries")
    interval = t.get("min_retry_interval_millis")
    timeout = t.get("timeout_seconds")
    return TaskSpec(
        task_key=task_key,
        notebook_path=notebook,
        base_parameters=base,
        depends_on=deps,
        run_if=run_if,
        run_job=run_job,
        run_job_parameters=run_job_params,
        max_retries=int(max_retries) if max_retries is not None else None,
        min_retry_interval_millis=int(interval) if interval is not None else None,
        retry_on_timeout=bool(t.get("retry_on_timeout", False)),
        timeout_seconds=int(timeout) if timeout else None,
        job_cluster_key=str(cluster_key) if cluster_key else None,
        existing_cluster_id=str(t["existing_cluster_id"]) if t.get("existing_cluster_id") else None,
    )


def _notebook(path: str, where: str, problems: list[str]) -> Path | None:
    if not path:
        problems.append(f"{where}: notebook_task has no notebook_path")
        return None
    p = Path(os.path.normpath(path))
    candidates = [p] if p.suffix == ".ipynb" else [p.with_name(p.name + ".ipynb"), p]
    for c in candidates:
        if c.is_file() and c.suffix == ".ipynb":
            return c
    problems.append(f"{where}: notebook {candidates[0]} does not exist")
    return None


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of a dependency graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def _validate_chains(jobs: dict[str, JobSpec], problems: list[str]) -> None:
    graph: dict[str, list[str]] = {}
    for key, job in jobs.items():
        graph[key] = []
        for task in job.tasks:
            if task.run_job is None:
                continue
            if task.run_job not in jobs:
                problems.append(
                    f"job {key!r}, task {task.task_key!r}: run_job_task names unknown job {task.run_job!r}; "
                    f"jobs: {', '.join(sorted(jobs))}"
                )
            else:
                graph[key].append(task.run_job)
    cycle = _find_cycle(graph)
    if cycle:
        problems.append(f"jobs run each other in a cycle through run_job_task: {' -> '.join(cycle)}")
