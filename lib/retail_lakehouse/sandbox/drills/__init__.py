"""Incident drills: each breaks the local lakehouse the way production breaks.

A drill module registers itself with `@register("name", notebook="restore", summary=...)`; the
function takes the environment (always `local`: drills refuse any other) and returns a `DrillResult`
saying what it broke and the papermill parameters that point the runbook notebook at the incident.
`lakehouse drill NAME` runs one; `lakehouse drill --list` lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from retail_lakehouse.core.errors import ConfigError, ParameterError


@dataclass
class DrillResult:
    """What a drill broke and how to point the runbook notebook at it.

    Attributes:
        name: drill name.
        notebook: the ops notebook that diagnoses or fixes it (`ops_notebooks/<notebook>.ipynb`).
        description: what was broken, in one or two sentences.
        parameters: papermill parameters for that notebook (env local included).
        facts: what the diagnosis should find (for tests), e.g. the bad version or the failed task.
    """

    name: str
    notebook: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Drill:
    name: str
    notebook: str
    summary: str
    run: Callable[[], DrillResult]


_DRILLS: dict[str, Drill] = {}


def register(name: str, *, notebook: str, summary: str) -> Callable[[Callable[[], DrillResult]], Callable[[], DrillResult]]:
    """Decorator registering a drill function under `name`."""

    def decorator(fn: Callable[[], DrillResult]) -> Callable[[], DrillResult]:
        if name in _DRILLS:
            raise ConfigError(f"drill {name!r} is registered twice")
        _DRILLS[name] = Drill(name, notebook, summary, fn)
        return fn

    return decorator


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def drills() -> dict[str, Drill]:
    """Every registered drill, by name."""
    _load_all()
    return dict(sorted(_DRILLS.items()))


def get(name: str) -> Drill:
    """A drill by name.

    Raises:
        ParameterError: unknown drill; the message lists the known ones.
    """
    known = drills()
    if name not in known:
        raise ParameterError("drill", f"unknown drill {name!r}; known drills: {', '.join(known) or 'none'}")
    return known[name]


def run(name: str, env: str = "local") -> DrillResult:
    """Run a drill on the local lakehouse (drills never run against a Databricks environment)."""
    if env != "local":
        raise ParameterError("env", "drills break things: they run only on the local lakehouse (env local)")
    return get(name).run()
