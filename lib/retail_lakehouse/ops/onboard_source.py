"""Onboard a new source, rehearsed end to end in a throwaway copy of the project.

The runbook's first procedure. The real change is `lakehouse onboard NAME --jdbc-table TABLE` in a
branch, reviewed and promoted dev -> qa -> prod (book chapter "Onboarding"). This procedure shows
what that command infers and writes (plan and diffs) and, for real (`dry_run False`), proves the
change in a copy of the project with its own local lakehouse: write the files, `onboard --check`,
run `retail_daily`, then read bronze, silver, quarantine, the reconciliation and the quality checks
of the new table. Neither the checkout nor the local lakehouse of this process is touched.

`project_dir` is a copy made by `ProjectCopy.create` with sources generated in its home (the drill
`new_source` makes one); empty: a copy is made here, with sources generated through the day the
`returns` table appears, and removed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from retail_lakehouse.core.errors import ParameterError
from retail_lakehouse.core.params import Param, Parameters
from retail_lakehouse.onboarding.project_copy import ProjectCopy
from retail_lakehouse.ops._outcome import Outcome

GENERATED_SCALE = 0.2
# Three days past the day the generator's `returns` table appears (sandbox/defects.yaml returns_day: 10).
REHEARSAL_DAYS = 13


def _local_only(env: str) -> str:
    if env != "local":
        raise ParameterError("env", "the rehearsal runs on a local copy; onboard for real with `lakehouse onboard` "
                             "in a branch and promote it dev -> qa -> prod (book: Onboarding)")
    return env


def _one_source(values: dict[str, Any]) -> None:
    if bool(values["jdbc_table"]) == bool(values["landing"]):
        raise ParameterError("jdbc_table", "give exactly one source: jdbc_table or landing")


# The notebook's parameters beyond their annotations (see core.params).
PARAMETERS = Parameters(
    check=_one_source,
    env=Param("env", check=_local_only),
    name="identifier",
    jdbc_table=Param("str", required=False),
    landing=Param("str", required=False),
    key=Param("str", required=False),
    watermark=Param("str", required=False),
    project_dir=Param("str", required=False),
)


@dataclass
class OnboardOutcome(Outcome):
    """What the rehearsal showed and proved.

    Attributes:
        plan: the inferred schema and the files, as `lakehouse onboard --dry-run` prints them.
        diff: the unified diffs of the change.
        check: problems `onboard --check` found after writing (empty: consistent).
        job_state: `retail_daily`'s final state in the copy ('' in a dry run).
        job_output: its task lines.
        counts: rows of bronze, silver and quarantine of the new table.
        reconciliation: the new table's reconciliation rows (bronze = silver + quarantine + duplicates).
        quality: the new table's quality results (check, status, metric).
        seconds: wall time of each step.
    """

    procedure: ClassVar[str] = "onboard_source"
    name: str
    dry_run: bool
    held: bool
    message: str
    plan: str = ""
    diff: str = ""
    check: list[str] = field(default_factory=list)
    job_state: str = ""
    job_output: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    reconciliation: pd.DataFrame = field(default_factory=pd.DataFrame)
    quality: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_copy(root: str | Path, *, days: int = REHEARSAL_DAYS, scale_factor: float = GENERATED_SCALE) -> ProjectCopy:
    """A project copy under `root` with sources generated in its home through `days`.

    Raises:
        ParameterError: the generation failed (its error).
    """
    copy = ProjectCopy.create(root)
    done = copy.cli("generate", "--scale-factor", str(scale_factor), "--days", str(days))
    if done.returncode:
        raise ParameterError("project_dir", f"generating the copy's sources failed: {done.stderr.strip()[-400:]}")
    return copy


def _source_args(p: Any) -> list[str]:
    args = [p.name, *(["--jdbc-table", p.jdbc_table] if p.jdbc_table else ["--landing", p.landing])]
    args += [*(["--key", p.key] if p.key else []), *(["--watermark", p.watermark] if p.watermark else [])]
    return args


def _timed(seconds: dict[str, float], step: str, fn: Any, *args: Any) -> Any:
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        seconds[step] = round(time.perf_counter() - started, 1)


def run(p: Any) -> OnboardOutcome:
    """Rehearse onboarding `p.name` (see the module's docstring); `p` are the notebook's parameters."""
    own = not p.project_dir
    root = Path(tempfile.mkdtemp(prefix="onboard-")) if own else Path(p.project_dir)
    seconds: dict[str, float] = {}
    try:
        copy = _timed(seconds, "prepare", prepare_copy, root / "copy") if own else ProjectCopy(root)
        with copy:
            return _rehearse(copy, p, seconds)
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def _rehearse(copy: ProjectCopy, p: Any, seconds: dict[str, float]) -> OnboardOutcome:
    name = p.name
    planned = _timed(seconds, "plan", copy.cli, "onboard", *_source_args(p), "--dry-run")
    if planned.returncode:
        return OnboardOutcome(name, p.dry_run, False, f"onboarding {name} was refused: {planned.stderr.strip()}",
                              seconds=seconds)
    text = planned.stdout
    plan, _, rest = text.partition("\n--- ")
    diff = ("--- " + rest).rsplit("\ndry run: nothing written", 1)[0] if rest else ""
    if p.dry_run:
        return OnboardOutcome(name, True, True, f"{name}: plan and diffs shown, nothing written", plan.strip(), diff,
                              seconds=seconds)
    written = _timed(seconds, "write", copy.cli, "onboard", *_source_args(p), "--yes")
    if written.returncode:
        return OnboardOutcome(name, False, False, f"writing failed: {written.stderr.strip()}", plan.strip(), diff,
                              seconds=seconds)
    checked = _timed(seconds, "check", copy.cli, "onboard", "--check")
    problems = [line.strip() for line in checked.stdout.splitlines() if line.startswith("  ")]
    job = _timed(seconds, "retail_daily", copy.cli, "run", "retail_daily")
    state = "SUCCESS" if job.returncode == 0 else "FAILED"
    counts, recon, quality = _timed(seconds, "read results", _results, copy, name)
    failed = quality[quality["check_status"] == "FAILED"] if len(quality) else quality
    held = not problems and state == "SUCCESS" and counts.get("silver", 0) > 0 and failed.empty
    message = (f"{name} onboarded in the copy: retail_daily {state}, silver.{name} {counts.get('silver', 0)} rows, "
               f"{counts.get('quarantine', 0)} quarantined, {len(quality)} quality checks"
               + (f", {len(failed)} FAILED" if len(failed) else ", none failed")
               + (f"; onboard --check: {'; '.join(problems)}" if problems else ""))
    return OnboardOutcome(name, False, held, message, plan.strip(), diff, problems, state,
                          job.stdout + job.stderr[-2000:], counts, recon, quality, seconds)


def _results(copy: ProjectCopy, name: str) -> tuple[dict[str, int], pd.DataFrame, pd.DataFrame]:
    full = lambda layer, t: f"retail_datalake.local_{layer}.{t}"  # noqa: E731
    tables = {"bronze": full("bronze", name), "silver": full("silver", name),
              "quarantine": full("silver", f"{name}_quarantine")}
    rows = copy.queries([
        *[f"SELECT count(*) AS n FROM {t}" for t in tables.values()],
        f"SELECT run_id, bronze_rows, silver_rows, quarantined_rows, duplicates_removed, balanced "
        f"FROM {full('monitoring', 'reconciliation')} WHERE table_name = '{tables['silver']}' ORDER BY processed_at",
        f"SELECT table_name, check_name, criticality, check_status, metric_value, details "
        f"FROM {full('monitoring', 'quality_metrics')} WHERE table_name LIKE '%.{name}%' ORDER BY table_name, check_name",
    ])  # fmt: skip
    counts = {label: int(result[0]["n"]) for label, result in zip(tables, rows, strict=False)}
    return counts, pd.DataFrame(rows[3]), pd.DataFrame(rows[4])


def summary_of(outcome: OnboardOutcome, params: Any) -> Any:
    """The notebook's summary (its last cell)."""
    from retail_lakehouse.ops.summary import as_parameters, of_change

    files = [line.split()[-1] for line in outcome.plan.splitlines() if line.startswith(("  new ", "  edit "))]
    return of_change(
        "onboard_source", env="local", dry_run=outcome.dry_run, held=outcome.held,
        symptom=f"a new source for {outcome.name} is not in the lakehouse yet",
        diagnosis=f"`lakehouse onboard {outcome.name}` writes {len(files)} files: " + ", ".join(files[:7]) + ".",
        evidence=outcome.message + (f"; steps (s): {outcome.seconds}" if outcome.seconds else ""),
        message=outcome.message, parameters=as_parameters(params),
        after=f"# for real, in a branch of the repository:\nlakehouse onboard {outcome.name} "
              f"--jdbc-table <TABLE>\nmake test\ngit push  # PR to dev, then qa, then main (prod)",
    )


