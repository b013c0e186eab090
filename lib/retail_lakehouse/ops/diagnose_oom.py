"""Diagnose an out-of-memory failure: which side ran out (driver or executors), why, and the sized remedy.

Reads the run through the jobs API (its failed task, error and trace, the job cluster it ran on and
its memory settings) and the input tables' sizes through SQL (`DESCRIBE DETAIL`), then classifies:

- ``collect_to_driver``: the driver ran out while pulling a result to it (`collect()`, `toPandas()`,
  `spark.driver.maxResultSize`);
- ``driver``: the driver ran out otherwise (a Python `MemoryError`, driver heap);
- ``skew``: executors ran out and the input is skewed (one partition much larger than the rest);
- ``executor``: executors ran out (container killed, executor lost, heap space on a task).

Remedies come from the runbook and are sized with the sizing table (`cluster_sizing.yaml`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.ops import cluster_sizing
from retail_lakehouse.ops.job_run_triage import Triage, triage
from retail_lakehouse.ops.summary import Summary, command, one_line

if TYPE_CHECKING:
    import pandas as pd
    from databricks.sdk import WorkspaceClient

__all__ = ["PARAMETERS", "OomDiagnosis", "classify_oom", "cluster_settings", "diagnose", "input_tables", "remedies", "summary_of"]

# The notebook's parameters beyond their annotations (see core.params): the run and the job may be empty.
PARAMETERS = Parameters(job_run_id=Param(required=False), job=Param(required=False))

_COLLECT = [r"\.collect\(", r"toPandas\(", r"collectAsList", r"maxResultSize", r"Total size of serialized results",
            r"\.take\(\s*\d{6,}", r"collect to (the )?driver"]
_EXECUTOR = [r"Container killed", r"ExecutorLostFailure", r"exit code 137", r"executor .*(lost|memory)",
             r"exceeding memory limits", r"TaskKilled", r"SparkOutOfMemoryError"]
_SKEW = [r"\bskew", r"hot key"]


def _match(patterns: list[str], text: str) -> str | None:
    for p in patterns:
        m = re.search(p, text, re.IGNORECASE)
        if m:
            line_start = text.rfind("\n", 0, m.start()) + 1
            line_end = text.find("\n", m.end())
            return text[line_start : line_end if line_end >= 0 else None].strip()[:240]
    return None


def classify_oom(error: str, *, skew_ratio: float | None = None) -> tuple[str, str]:
    """Classify an OOM from its error text (class, message, trace) and the input's skew.

    Args:
        error: error class, message and trace of the failed task.
        skew_ratio: largest partition / median partition of the input (None when unknown).

    Returns:
        (kind, evidence): kind is collect_to_driver, driver, skew or executor.
    """
    collect = _match(_COLLECT, error)
    executor = _match(_EXECUTOR, error)
    skew = _match(_SKEW, error)
    if executor:
        if skew or (skew_ratio is not None and skew_ratio >= 5):
            why = skew or f"largest input partition is {skew_ratio:.1f}x the median"
            return "skew", f"{executor}; {why}"
        return "executor", executor
    if collect:
        return "collect_to_driver", collect
    driver = _match([r"MemoryError", r"java heap space", r"OutOfMemoryError", r"Cannot allocate memory"], error)
    return "driver", driver or (error.strip().splitlines()[0][:240] if error.strip() else "out of memory")


def cluster_settings(run: dict[str, Any], task: dict[str, Any] | None) -> dict[str, Any]:
    """The job cluster a task ran on: node types, workers and memory settings (from the run)."""
    key = (task or {}).get("job_cluster_key")
    clusters = run.get("job_clusters") or []
    spec = next((c.get("new_cluster") or {} for c in clusters if c.get("job_cluster_key") == key), None)
    if spec is None:
        spec = (task or {}).get("new_cluster") or {}
    conf = spec.get("spark_conf") or {}
    node = spec.get("node_type_id")
    driver = spec.get("driver_node_type_id") or node
    auto = spec.get("autoscale") or {}
    return {
        "job_cluster_key": key or "(serverless or existing cluster)",
        "node_type_id": node,
        "driver_node_type_id": driver,
        "workers": spec.get("num_workers") if not auto else f"{auto.get('min_workers')}-{auto.get('max_workers')}",
        "max_workers": int(auto.get("max_workers") or spec.get("num_workers") or 0),
        "worker_memory_gb": cluster_sizing.node_memory_gb(node),
        "driver_memory_gb": cluster_sizing.node_memory_gb(driver),
        "spark.driver.memory": conf.get("spark.driver.memory"),
        "spark.driver.maxResultSize": conf.get("spark.driver.maxResultSize"),
        "spark.executor.memory": conf.get("spark.executor.memory"),
        "spark.sql.shuffle.partitions": conf.get("spark.sql.shuffle.partitions"),
    }


def input_tables(task: dict[str, Any] | None) -> list[str]:
    """Registry tables a task reads: named in its parameters, task key or notebook path."""
    from retail_lakehouse.core.tables import registry

    task = task or {}
    notebook = (task.get("notebook_task") or {})
    params = {**(notebook.get("base_parameters") or {})}
    texts = [str(v) for v in params.values()] + [str(task.get("task_key") or ""), str(notebook.get("notebook_path") or "")]
    found: list[str] = []
    for value in texts:
        for t in registry():
            if t.layer == "monitoring" or t.name.endswith("_quarantine"):
                continue
            named = value in (t.name, t.ref) or re.search(rf"(^|[_/.]){re.escape(t.name)}($|[_/.])", value)
            if named and t.ref not in found:
                found.append(t.ref)
    # a parameter naming a table exactly beats a name guessed from the task key
    exact = [t.ref for v in params.values() for t in registry() if str(v) in (t.name, t.ref) and t.layer != "monitoring"]
    return list(dict.fromkeys(exact)) or found[:3]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def remedies(kind: str, settings: dict[str, Any], input_bytes: int) -> pd.DataFrame:
    """The runbook's remedies for an OOM kind, sized from the cluster and the input (ranked)."""
    import pandas as pd

    size = cluster_sizing.size_for(input_bytes)
    driver = settings.get("driver_node_type_id")
    bigger = cluster_sizing.driver_upgrade(driver)
    gb = input_bytes / 1e9
    partitions = cluster_sizing.shuffle_partitions(input_bytes)
    rows: list[tuple[str, str]] = []
    if kind == "collect_to_driver":
        rows += [
            ("Do not pull the data to the driver: write the result to a table, or aggregate / limit it in Spark "
             "before collect() / toPandas().", "the error was raised while collecting a result to the driver"),
            (f"If the driver really must hold it: driver node {bigger} "
             f"({cluster_sizing.node_memory_gb(bigger)} GB) instead of {driver} ({settings.get('driver_memory_gb')} GB) "
             "and spark.driver.maxResultSize at about half the driver memory.",
             f"input is {_human(input_bytes)} on disk (larger in memory); the driver has {settings.get('driver_memory_gb')} GB"),
        ]
    elif kind == "driver":
        rows += [
            (f"Give the driver more memory: driver_node_type_id {bigger} ({cluster_sizing.node_memory_gb(bigger)} GB) "
             f"instead of {driver}.", f"the driver ran out of memory on {driver}"),
            ("Keep large objects out of the driver: broadcast only small tables, avoid building big Python "
             "lists or pandas frames in the notebook.", "driver-side allocation failed"),
        ]
    elif kind == "skew":
        rows += [
            ("Enable adaptive skew-join handling: spark.sql.adaptive.enabled true and "
             "spark.sql.adaptive.skewJoin.enabled true.", "one input partition is far larger than the others"),
            ("Salt the hot key (add a random 0-15 suffix on the large side, replicate the small side) or "
             "filter the hot key into its own join.", "executors died on the skewed partition"),
            (f"shuffle partitions {partitions} (about 128 MB each for {gb:.3f} GB of input).",
             f"spark.sql.shuffle.partitions is {settings.get('spark.sql.shuffle.partitions') or 'default (200)'}"),
        ]
    else:
        rows += [
            (f"More memory per task: memory-optimized workers ({size.node_type if size.name == 'large' else 'r5.2xlarge'}) "
             f"and spark.sql.shuffle.partitions {partitions} so each partition holds about 128 MB.",
             f"executors ran out of memory on {settings.get('node_type_id')} "
             f"({settings.get('worker_memory_gb')} GB) with {gb:.3f} GB of input"),
        ]
    rows.append(
        (f"Size the job cluster for its input: {size.describe()}.",
         f"the run reads {_human(input_bytes)}; the cluster has {settings.get('workers')} workers {settings.get('node_type_id')}")
    )
    return pd.DataFrame(
        [{"rank": i + 1, "remedy": r, "evidence": e} for i, (r, e) in enumerate(rows)],
        columns=["rank", "remedy", "evidence"],
    )


@dataclass
class OomDiagnosis:
    """The diagnosis of one OOM run.

    Attributes:
        triage: the run's triage (tasks, errors, classification).
        task_key: the task that ran out of memory (None: none did).
        kind: collect_to_driver, driver, skew, executor, or `none`.
        evidence: the error line that decided it.
        cluster: the task's cluster settings.
        inputs: input tables with sizeInBytes and numFiles.
        remedies: ranked, sized remedies.
        diagnosis: one plain sentence.
    """

    triage: Triage
    task_key: str | None
    kind: str
    evidence: str
    cluster: dict[str, Any]
    inputs: pd.DataFrame
    remedies: pd.DataFrame
    diagnosis: str
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _input_sizes(w: WorkspaceClient, refs: list[str], env: str) -> pd.DataFrame:
    import pandas as pd

    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.core.tables import registry
    from retail_lakehouse.databricks.statements import run_sql

    settings = load_settings(env)
    rows = []
    for ref in refs:
        full = registry().get(ref).full_name(settings)
        try:
            d = run_sql(w, f"DESCRIBE DETAIL {full}", env=env).iloc[0]
            rows.append({"table": full, "sizeInBytes": int(d["sizeInBytes"]), "numFiles": int(d["numFiles"])})
        except Exception as exc:  # noqa: BLE001 - a missing input is shown, not fatal
            rows.append({"table": full, "sizeInBytes": 0, "numFiles": 0, "note": str(exc).splitlines()[0][:120]})
    return pd.DataFrame(rows, columns=["table", "sizeInBytes", "numFiles", "note"] if any("note" in r for r in rows)
                        else ["table", "sizeInBytes", "numFiles"])


def diagnose(w: WorkspaceClient, job_or_run: str = "", *, env: str = "local") -> OomDiagnosis:
    """Diagnose the latest failed run of a job (or the given run) as an OOM.

    Args:
        w: workspace client.
        job_or_run: run id, job name, or empty for the latest failed run of any job.
        env: environment (names the input tables).

    Returns:
        The diagnosis; kind `none` with a plain sentence when the run did not fail on memory.
    """
    import pandas as pd

    t = triage(w, job_or_run)
    if t.run_id is None:
        return OomDiagnosis(t, None, "none", "", {}, pd.DataFrame(), pd.DataFrame(), t.diagnosis)
    oom = [k for k, c in t.failed.items() if c.category == "out_of_memory"]
    if not oom:
        what = ", ".join(f"{k}: {c.category}" for k, c in t.failed.items()) or "no failed task"
        return OomDiagnosis(t, None, "none", "", {}, pd.DataFrame(), pd.DataFrame(),
                            f"Run {t.run_id} of {t.job_name} did not fail on memory ({what}); use job_failure_triage.")
    key = oom[0]
    task = next((x for x in t.raw.get("tasks") or [] if x.get("task_key") == key), None)
    error = "\n".join(str(x) for x in ((task or {}).get("error"), (task or {}).get("error_trace")) if x)
    cluster = cluster_settings(t.raw, task)
    inputs = _input_sizes(w, input_tables(task), env)
    input_bytes = int(inputs["sizeInBytes"].sum()) if len(inputs) else 0
    kind, evidence = classify_oom(error)
    where = {"collect_to_driver": "the driver, collecting a result to it", "driver": "the driver",
             "skew": "executors, on a skewed partition", "executor": "executors"}[kind]
    diagnosis = (
        f"Run {t.run_id} of {t.job_name}: task {key} ran out of memory in {where} ({kind}). "
        f"Evidence: {evidence}. Cluster: {cluster.get('workers')} x {cluster.get('node_type_id')}, "
        f"driver {cluster.get('driver_node_type_id')}; input {_human(input_bytes)}."
    )
    return OomDiagnosis(t, key, kind, evidence, cluster, inputs, remedies(kind, cluster, input_bytes), diagnosis, error)


def summary_of(d: OomDiagnosis, *, env: str) -> Summary:
    """The notebook's summary (its last cell): where memory ran out, the first remedy, how to check it."""
    t = d.triage
    if d.task_key is None:
        nxt = (command("job_failure_triage", env=env, job_run_id=t.run_id) if t.run_id is not None
               else "Nothing to do.")
        return Summary("diagnose_oom", "NOTHING TO DO" if t.run_id is None else "DIAGNOSED",
                       f"Job {t.job_name} run {t.run_id} ended {t.result_state}" if t.run_id else "a job run reported out of memory",
                       d.diagnosis, t.result_state or "no failed run", nxt, "Diagnosis only; nothing changed.")
    first = d.remedies.iloc[0] if len(d.remedies) else None
    step = f"# {one_line(first['remedy'], 300)}\n" if first is not None else ""
    step += "# then rerun the failed tasks and check the run now succeeds:\n"
    step += command("job_failure_triage", env=env, job_run_id=t.run_id, action="retry", dry_run=False,
                    **({"confirm": True} if env in ("qa", "prod") else {}))
    return Summary(
        "diagnose_oom", "DIAGNOSED",
        f"Job {t.job_name} run {t.run_id} ended {t.result_state}: task {d.task_key} ran out of memory",
        d.diagnosis,
        d.evidence or (first["evidence"] if first is not None else ""),
        step,
        "Diagnosis only; nothing changed.",
    )
