"""Which tasks run and in what order: Databricks `run_if` rules, and the critical path first when
fewer slots than ready tasks are free.

Submitting ready tasks in declaration order let short side branches (a dimension build) take the
slots while the task at the head of the job's longest chain waited: in the daily increment,
`clean_orders` (head of clean_orders -> clean_order_items -> build_fact_sales -> build_agg_daily_sales)
waited ~0.8 s behind two dimension builds. Each task's rank is the length of the longest chain of
dependents it heads (tasks, itself included), then how many tasks depend on it at all, then
declaration order, so a job whose tasks are independent keeps its declared order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retail_lakehouse.databricks.bundle import JobSpec, TaskSpec

__all__ = ["priorities", "run_if"]


def priorities(job: JobSpec) -> dict[str, tuple[int, int, int]]:
    """Sort key per task key: smaller runs first (negated chain length, negated dependents, position)."""
    dependents: dict[str, list[str]] = {t.task_key: [] for t in job.tasks}
    for task in job.tasks:
        for dep in task.depends_on:
            if dep in dependents:
                dependents[dep].append(task.task_key)
    chain: dict[str, int] = {}
    below: dict[str, set[str]] = {}
    for task in reversed(job.topological_order()):  # dependents before the tasks they depend on
        key = task.task_key
        chain[key] = 1 + max((chain[d] for d in dependents[key]), default=0)
        below[key] = set(dependents[key]).union(*(below[d] for d in dependents[key]))
    position = {t.task_key: i for i, t in enumerate(job.tasks)}
    return {key: (-chain[key], -len(below[key]), position[key]) for key in position}


def run_if(spec: TaskSpec, upstream: list[str]) -> str | None:
    """None to run the task, else the state it ends in without running (Databricks run_if)."""
    if not upstream:
        return None
    failed = sum(s in ("FAILED", "UPSTREAM_FAILED") for s in upstream)
    succeeded = sum(s == "SUCCESS" for s in upstream)
    if "CANCELED" in upstream and spec.run_if != "ALL_DONE":
        return "CANCELED"
    rule = spec.run_if
    if rule == "ALL_DONE":
        return None
    if rule == "ALL_SUCCESS":
        return None if succeeded == len(upstream) else ("UPSTREAM_FAILED" if failed else "EXCLUDED")
    if rule == "NONE_FAILED":
        return "UPSTREAM_FAILED" if failed else None
    if rule == "AT_LEAST_ONE_SUCCESS":
        return None if succeeded else ("UPSTREAM_FAILED" if failed else "EXCLUDED")
    if rule == "ALL_FAILED":
        return None if failed == len(upstream) else "EXCLUDED"
    return None if failed else "EXCLUDED"  # AT_LEAST_ONE_FAILED
