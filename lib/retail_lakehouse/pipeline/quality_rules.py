"""Data-quality rule sets: YAML per table, parsed and validated as a whole.

A rule set (``checks/<layer>_<table>.yaml``)::

    table: silver.orders
    checks:
      - name: order_id_unique
        check: unique
        arguments: {columns: [order_id]}
        criticality: error        # error | warn

Every check accepts a ``where`` argument (a SQL filter applied first). The whole set of rule sets is
validated before anything runs and every problem is reported at once (`ConfigError`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from retail_lakehouse.core.config import Settings, load_settings, load_yaml
from retail_lakehouse.core.errors import ConfigError

if TYPE_CHECKING:
    pass

from retail_lakehouse.pipeline import quality_checks  # noqa: F401 - the built-in check kinds register themselves
from retail_lakehouse.pipeline.quality_model import (
    COMMON_ARGUMENTS,
    CRITICALITIES,
    CheckKind,
    CheckSpec,
    get_check,
)
from retail_lakehouse.pipeline.quality_table_checks import declared_checks

__all__ = ["describe_rule_sets", "load_rule_sets", "parse_rule_sets"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- rule sets


def _validate_check(kind: CheckKind, arguments: Mapping[str, Any]) -> list[str]:
    problems = [f"missing argument {a!r}" for a in kind.required if a not in arguments]
    allowed = {*kind.required, *kind.optional, *COMMON_ARGUMENTS}
    problems += [
        f"unknown argument {a!r} (allowed: {', '.join(sorted(allowed))})"
        for a in arguments
        if a not in allowed
    ]
    if kind.validate and not problems:
        problems += kind.validate(arguments)
    return problems


def parse_rule_sets(
    raw_sets: Sequence[tuple[str, Any]], settings: Settings | None = None
) -> dict[str, list[CheckSpec]]:
    """Validate rule sets and return table ref -> checks.

    Args:
        raw_sets: (source name for messages, parsed YAML) pairs.
        settings: environment, to resolve table names.

    Raises:
        ConfigError: every problem of every rule set, in one message.
    """
    from retail_lakehouse.core.errors import TableNotFoundError
    from retail_lakehouse.core.tables import registry

    settings = settings or load_settings()
    problems: list[str] = []
    out: dict[str, list[CheckSpec]] = {}
    for source, raw in raw_sets:
        if not isinstance(raw, Mapping):
            problems.append(f"{source}: a rule set is a mapping with `table` and `checks`")
            continue
        try:
            ref = registry().get(str(raw.get("table", "")), settings=settings).ref
        except TableNotFoundError as exc:
            problems.append(f"{source}: table: {exc}")
            ref = str(raw.get("table"))
        checks = raw.get("checks")
        if not isinstance(checks, list) or not checks:
            problems.append(f"{source}: `checks` must be a non-empty list")
            continue
        seen: set[str] = {c.name for c in out.get(ref, [])}
        for i, entry in enumerate(checks):
            where = f"{source}: checks[{i}]"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: a check is a mapping {{name, check, arguments, criticality}}")
                continue
            name = entry.get("name")
            where = f"{where} ({name})" if name else where
            unknown_keys = set(entry) - {"name", "check", "arguments", "criticality"}
            if unknown_keys:
                problems.append(f"{where}: unknown key(s) {sorted(unknown_keys)}")
            if not name or not isinstance(name, str):
                problems.append(f"{where}: missing `name`")
            elif name in seen:
                problems.append(f"{where}: duplicate check name {name!r} for {ref}")
            else:
                seen.add(name)
            criticality = entry.get("criticality", "error")
            if criticality not in CRITICALITIES:
                problems.append(
                    f"{where}: criticality must be one of {', '.join(CRITICALITIES)}, not {criticality!r}"
                )
            arguments = entry.get("arguments") or {}
            if not isinstance(arguments, Mapping):
                problems.append(f"{where}: `arguments` must be a mapping")
                arguments = {}
            check = entry.get("check")
            try:
                kind = get_check(str(check))
            except ConfigError as exc:
                problems.append(f"{where}: {exc}")
                continue
            problems += [f"{where}: {p}" for p in _validate_check(kind, arguments)]
            out.setdefault(ref, []).append(
                CheckSpec(ref, str(name), kind.name, dict(arguments), criticality)  # type: ignore[arg-type]
            )
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the quality rule sets:\n  " + "\n  ".join(problems))
    return out


def load_rule_sets(
    directory: str | Path | None = None, settings: Settings | None = None, *, declared: bool | None = None
) -> dict[str, list[CheckSpec]]:
    """Read and validate every ``*.yaml`` rule set (default: the packaged ``checks/`` folder).

    Args:
        directory: folder of rule sets; None = the packaged ones.
        settings: environment.
        declared: put the registry's table checks (has_rows, sla_freshness, volume, schema_drift; see
            `quality_table_checks`) first in each silver / gold table's set; default: with the packaged sets.

    Raises:
        ConfigError: unreadable YAML or invalid rule sets (all problems at once).
    """
    if directory is None:
        files = [
            (f.name, f.read_text())
            for f in resources.files("retail_lakehouse.pipeline").joinpath("checks").iterdir()
            if f.name.endswith(".yaml")
        ]
    else:
        files = [(p.name, p.read_text()) for p in Path(directory).glob("*.yaml")]
    raw_sets, problems = [], []
    for name, text in sorted(files):
        try:
            raw_sets.append((name, load_yaml(text)))
        except yaml.YAMLError as exc:
            problems.append(f"{name}: not valid YAML: {exc}")
    try:
        parsed = parse_rule_sets(raw_sets, settings)
    except ConfigError as exc:
        problems.append(str(exc))
        parsed = {}
    if problems:
        raise ConfigError("\n".join(problems))
    if declared if declared is not None else directory is None:
        table_checks = declared_checks(settings)
        parsed = {ref: table_checks.get(ref, []) + parsed.get(ref, []) for ref in sorted({*table_checks, *parsed})}
    return parsed




def describe_rule_sets(rule_sets: Mapping[str, list[CheckSpec]]) -> str:
    """The rule sets as indented JSON, for notebooks and docs."""
    return json.dumps(
        {t: [c.__dict__ for c in checks] for t, checks in rule_sets.items()}, indent=2, default=str
    )
