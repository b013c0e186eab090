"""Failure classifiers: what kind of failure a task's error shows, and the runbook's next step.

A registry of classifiers, tried in registration order: each looks at a task's error class, message
and trace and returns the evidence when it recognises it. The first match wins; `other` catches the
rest. A new classifier registers itself with `@classifier(name, next_step=..., retry_helps=...)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CLASSIFIERS", "Classification", "classifier", "classify"]


@dataclass(frozen=True)
class Classification:
    """What kind of failure a task hit and what the runbook says to do next.

    Attributes:
        category: out_of_memory, schema_mismatch, source_unreachable, data_quality or other (and
            orchestration: an Airflow task that started no Databricks run).
        evidence: the part of the error that decided it.
        next_step: the runbook's next step, in one or two sentences.
        retry_helps: whether a plain retry can succeed once the cause is fixed (or by itself).
        notebook: the ops notebook that continues the diagnosis, if any.
    """

    category: str
    evidence: str
    next_step: str
    retry_helps: bool
    notebook: str | None = None


Classifier = Callable[[str], "str | None"]
# name -> (matcher returning the evidence or None, next step, retry helps, follow-up notebook)
CLASSIFIERS: dict[str, tuple[Classifier, str, bool, str | None]] = {}


def classifier(
    name: str, *, next_step: str, retry_helps: bool, notebook: str | None = None
) -> Callable[[Classifier], Classifier]:
    """Register a failure classifier (tried in registration order; `other` is the fallback)."""

    def decorator(fn: Classifier) -> Classifier:
        CLASSIFIERS[name] = (fn, next_step, retry_helps, notebook)
        return fn

    return decorator


def _words(text: str, limit: int = 240) -> str:
    """`text` cut to `limit` characters at a word boundary (never a word cut in two)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " ..."


def _first(patterns: list[str], text: str) -> str | None:
    for pattern in patterns:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            # The matching line, from a word boundary before the match to the end of a word after it.
            start = text.rfind("\n", 0, m.start()) + 1
            start = max(start, m.start() - 60)
            if start > 0 and text[start - 1] not in " \n":
                start = text.find(" ", start, m.start()) + 1 or m.start()
            line = text[start:].strip().splitlines()[0] if text[start:].strip() else ""
            return _words(line, 240) if text else None
    return None


@classifier(
    "out_of_memory",
    next_step="Run diagnose_oom for this run: it tells driver from executor OOM, skew and collect-to-driver, "
    "and sizes the remedy. A plain retry on the same cluster fails the same way.",
    retry_helps=False,
    notebook="diagnose_oom",
)
def _oom(text: str) -> str | None:
    return _first(
        [
            r"\bMemoryError\b",
            r"OutOfMemoryError",
            r"java heap space",
            r"GC overhead limit exceeded",
            r"exceeding memory limits",
            r"Container killed .*memory",
            r"exit code 137",
            r"Cannot allocate memory",
            r"std::bad_alloc",
            r"driver .*out of memory",
        ],
        text,
    )


@classifier(
    "schema_mismatch",
    next_step="Compare the source's columns with bronze and silver (schema_evolution notebook), evolve the "
    "table as the runbook describes, then retry the failed tasks.",
    retry_helps=False,
    notebook="schema_evolution",
)
def _schema(text: str) -> str | None:
    return _first(
        [
            r"SchemaMismatchError",
            r"schema mismatch",
            r"DELTA_FAILED_TO_MERGE_FIELDS",
            r"UNRESOLVED_COLUMN",
            r"cannot resolve",
            r"column .* does not exist",
            r"cannot cast",
        ],
        text,
    )


@classifier(
    "source_unreachable",
    next_step="Check the source system (database up, credentials, network, landing folder present); "
    "bronze was not changed. When the source answers again, retry the failed tasks (action retry).",
    retry_helps=True,
)
def _source(text: str) -> str | None:
    return _first(
        [
            r"SourceError",
            r"unreachable",
            r"Connection refused",
            r"could not connect",
            r"timed out",
            r"No such file or directory",
            r"FileNotFoundError",
            r"unable to open database",
            r"could not be read",
        ],
        text,
    )


@classifier(
    "data_quality",
    next_step="Run quality_failure_triage for the table and date: it shows the failed checks, the "
    "quarantined rows and the run that produced them. Fix the data or the rule, then rerun the checks.",
    retry_helps=False,
    notebook="quality_failure_triage",
)
def _quality(text: str) -> str | None:
    return _first([r"CheckFailedError", r"quality check", r"check .* FAILED", r"expectation"], text)


_OTHER = Classification(
    "other",
    "",
    "Read the error trace and the executed notebook of the failed task. A transient error (a lost "
    "node, a throttled API) usually passes on retry; anything else needs a code or data fix first.",
    True,
)


def classify(error: str | None) -> Classification:
    """Classify a task's error text (error class, message and trace together).

    Args:
        error: the error output; None or empty gives `other`.

    Returns:
        The first registered classifier that recognises it, else `other`.
    """
    text = error or ""
    for name, (fn, next_step, retry_helps, notebook) in CLASSIFIERS.items():
        evidence = fn(text)
        if evidence:
            return Classification(name, evidence, next_step, retry_helps, notebook)
    return Classification(_OTHER.category, _words(text.strip().splitlines()[0], 240) if text.strip() else "",
                          _OTHER.next_step, _OTHER.retry_helps)
