"""Sail's look-up of Python data sources, answered once per process (see the function)."""

from __future__ import annotations

from typing import Any

_SAIL_DATA_SOURCES = "pysail.datasources"


def cache_data_source_discovery() -> None:
    """Keep the first answer of Sail's per-session look-up of `pysail.datasources` entry points.

    Sail calls `importlib.metadata.entry_points(group="pysail.datasources")` for every new session
    (one per notebook task), which reads the metadata of every installed distribution: 8-14 ms each
    on a quiet process, holding the GIL the runner's threads need (alternated no-new-data runs: the
    runner's CPU 3.8 -> 3.6 s). The installed distributions do not change while a process serves
    sessions, so that one group's answer is kept; every other call goes to importlib as before.
    """
    import functools
    import importlib.metadata as metadata

    original = metadata.entry_points
    if getattr(original, "__wrapped__", None) is not None:
        return  # already cached in this process
    kept: list[Any] = []

    @functools.wraps(original)
    def entry_points(**params: Any) -> Any:
        if params != {"group": _SAIL_DATA_SOURCES}:
            return original(**params)
        if not kept:
            kept.append(original(**params))
        return kept[0]

    metadata.entry_points = entry_points
