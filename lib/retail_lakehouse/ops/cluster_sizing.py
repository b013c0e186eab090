"""The runbook's cluster sizing table (`cluster_sizing.yaml`), for sizing recommendations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["ClusterSize", "driver_upgrade", "node_memory_gb", "shuffle_partitions", "size_for", "sizes"]


@dataclass(frozen=True)
class ClusterSize:
    """One row of the sizing table."""

    name: str
    node_type: str
    min_workers: int
    max_workers: int
    max_input_gb: float
    suits: str

    @property
    def workers(self) -> str:
        """`2` or `2-8` workers."""
        return str(self.min_workers) if self.min_workers == self.max_workers else f"{self.min_workers}-{self.max_workers}"

    def describe(self) -> str:
        return f"{self.name}: {self.workers} workers {self.node_type} ({self.suits})"


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("retail_lakehouse.ops").joinpath("cluster_sizing.yaml").read_text()
    return yaml.safe_load(text)


def sizes() -> list[ClusterSize]:
    """The sizes, smallest first."""
    return [ClusterSize(**row) for row in _table()["sizes"]]


def size_for(input_bytes: float) -> ClusterSize:
    """The smallest size whose data volume covers `input_bytes` (the largest when none does)."""
    gb = input_bytes / 1e9
    for size in sizes():
        if gb <= size.max_input_gb:
            return size
    return sizes()[-1]


def size_named(name: str) -> ClusterSize | None:
    """A size by name, or None."""
    return next((s for s in sizes() if s.name == name), None)


def node_memory_gb(node_type: str | None) -> float | None:
    """Memory of a node type in GB (None when the table does not know it)."""
    node = (_table().get("nodes") or {}).get(node_type or "")
    return float(node["memory_gb"]) if node else None


def driver_upgrade(node_type: str | None) -> str:
    """The driver node to move to after a driver OOM (the largest known when unknown)."""
    return str((_table().get("driver_upgrade") or {}).get(node_type or "", "r5.4xlarge"))


def shuffle_partitions(input_bytes: float, *, cores: int = 8) -> int:
    """`spark.sql.shuffle.partitions` giving about `target_partition_mb` per partition (a multiple of cores)."""
    target = float(_table().get("target_partition_mb", 128)) * 1e6
    wanted = max(1, math.ceil(input_bytes / target))
    return max(cores, math.ceil(wanted / cores) * cores)
