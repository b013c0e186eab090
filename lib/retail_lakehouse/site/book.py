"""The runbook site: a Jupyter Book of the runbook's chapters with executed runs of the ops notebooks.

`build_book()` (used by `lakehouse book` and `make book`):

1. for each drill of `retail_lakehouse.sandbox.drills` whose notebook exists, reuses the executed run in
   `book/_generated/runs/` when its inputs are unchanged (notebook source, library source, drill),
   else breaks the demo lakehouse the drill's way and runs the notebook with papermill on the
   drill's parameters (in a child process with its own engine; a small demo lakehouse is built
   first when `LAKEHOUSE_HOME` has none);
2. writes each procedure's parameter table and commands from the notebook itself (papermill's
   inspection), so the pages cannot drift from the code;
3. runs `jupyter-book build . --warningiserror` into `_build/html`, with plotly.js served from the
   site (no CDN) and notebooks never re-executed (`execute_notebooks: off`: the outputs shown are
   the papermill run's).

Executed runs are sub-pages of their chapter: `_toc.yml` globs `book/_generated/runs/<notebook>--*`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from retail_lakehouse.core.config import PROJECT_ROOT, lakehouse_home
from retail_lakehouse.core.errors import BookBuildError, LakehouseError
from retail_lakehouse.site import _book_airflow as airflow_example
from retail_lakehouse.site import _book_pages as pages
from retail_lakehouse.site import _book_runs as runs

BUILD_DIR = PROJECT_ROOT / "_build"
HTML_DIR = BUILD_DIR / "html"

CHAPTERS = runs.CHAPTERS


@dataclass
class BookPlan:
    """What the build found: notebooks, drills per notebook, runs to reuse and runs to execute."""

    notebooks: list[str]
    records: dict[str, list[runs.RunRecord]]
    to_execute: list[tuple[str, str, str]]
    without_drill: list[str]
    drills: dict[str, list[str]]


def ops_notebooks() -> list[str]:
    """Names of the ops notebooks in `ops_notebooks/`."""
    return sorted(p.stem for p in runs.OPS_DIR.glob("*.ipynb") if not p.name.startswith((".", "_")))


def plan(*, clean: bool = False) -> BookPlan:
    """Decide which example runs are reused and which must execute."""
    from retail_lakehouse.sandbox import drills

    notebooks = ops_notebooks()
    lib_hash = runs.library_hash()
    records: dict[str, list[runs.RunRecord]] = {}
    to_execute: list[tuple[str, str, str]] = []
    by_notebook: dict[str, list[str]] = {}
    for drill in drills.drills().values():
        if drill.notebook not in notebooks:
            print(f"[book] drill {drill.name}: ops_notebooks/{drill.notebook}.ipynb does not exist; skipped")
            continue
        by_notebook.setdefault(drill.notebook, []).append(drill.name)
        key = runs.run_key(drill.notebook, drill.name, lib_hash)
        record = None if clean else runs.load_record(runs.run_stem(drill.notebook, drill.name))
        if record is not None and record.key == key:
            records.setdefault(drill.notebook, []).append(record)
        else:
            to_execute.append((drill.notebook, drill.name, key))
    with_drill = {nb for nb, _, _ in to_execute} | set(records)
    without = [nb for nb in notebooks if nb not in with_drill]
    return BookPlan(notebooks, records, to_execute, without, by_notebook)


def _prune_runs(keep: set[str]) -> None:
    """Remove runs of drills or notebooks that no longer exist (the toc would still glob them)."""
    if not runs.RUNS_DIR.exists():
        return
    for path in runs.RUNS_DIR.rglob("*"):
        stem = str(path.relative_to(runs.RUNS_DIR)).split(".")[0]
        if path.is_file() and (stem not in keep or path.name.endswith(".failed.ipynb")):
            path.unlink()


def execute(book_plan: BookPlan, home: Path) -> list[str]:
    """Execute the planned runs in a child process with `home` as the lakehouse.

    Returns:
        The runs that failed (`notebook on drill`), whose pages then show no example.
    """
    if not book_plan.to_execute:
        return []
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "LAKEHOUSE_ENV": "local", "PYTHONUNBUFFERED": "1"}
    env.pop("SPARK_REMOTE", None)
    cmd = [sys.executable, "-m", "retail_lakehouse.site._book_runs", "--home", str(home)]
    cmd += ["--jobs", json.dumps(book_plan.to_execute)]
    subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, check=False)
    failed = []
    for notebook, drill, key in book_plan.to_execute:
        record = runs.load_record(runs.run_stem(notebook, drill))
        if record is None or record.key != key:
            failed.append(f"{notebook} on drill {drill}")
            continue
        book_plan.records.setdefault(notebook, []).append(record)
    for records in book_plan.records.values():
        records.sort(key=lambda r: r.drill)
    return failed


def write_pages(book_plan: BookPlan) -> None:
    """Parameter tables, procedure includes and the procedure index, from the notebooks."""
    for notebook in sorted(set(CHAPTERS) | set(book_plan.notebooks)):
        exists = notebook in book_plan.notebooks
        parameters = pages.inspect(notebook) if exists else None
        if parameters is not None:
            pages.write_if_changed(pages.PARAMS_DIR / f"{notebook}.md", pages.params_table(parameters))
        page = pages.procedure_page(
            notebook, parameters, book_plan.records.get(notebook, []), book_plan.drills.get(notebook, [])
        )
        pages.write_if_changed(pages.PROCEDURES_DIR / f"{notebook}.md", page)
    others = [nb for nb in book_plan.notebooks if nb not in CHAPTERS]
    other_text = "".join(
        f"### `{nb}`\n\n"
        + pages.procedure_page(
            nb, pages.inspect(nb), book_plan.records.get(nb, []), book_plan.drills.get(nb, [])
        )
        + "\n"
        for nb in others
    )
    pages.write_if_changed(
        pages.PROCEDURES_DIR / "_others.md", other_text or "Every ops notebook has its chapter.\n"
    )
    pages.write_if_changed(
        pages.PROCEDURES_DIR / "_index.md", pages.index_page(book_plan.notebooks, book_plan.records, CHAPTERS)
    )


def _static_assets() -> None:
    """plotly.js served by the site itself (`html_static_path` in _config.yml)."""
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = runs.GENERATED / "static" / "plotly.min.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)


def sphinx_build(*, clean: bool = False) -> Path:
    """`jupyter-book build . --warningiserror` into `_build/html`; returns index.html."""
    if clean:
        shutil.rmtree(BUILD_DIR, ignore_errors=True)
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb)] if jb.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]
    cmd += ["build", str(PROJECT_ROOT), "--builder", "html", "--warningiserror", "--keep-going", "--quiet"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise BookBuildError(f"jupyter-book build failed (warnings are errors):\n{tail}")
    index = HTML_DIR / "index.html"
    if not index.exists():
        raise BookBuildError(f"jupyter-book build ran but wrote no {index}")
    return index


def build_book(*, clean: bool = False, home: Path | None = None) -> Path:
    """Build the runbook site into `_build/html` and return the path of its index.html.

    Args:
        clean: re-execute every example run and rebuild every page (default: reuse what is unchanged).
        home: the lakehouse the drills break and the notebooks run on; default `LAKEHOUSE_HOME`
            (a small demo lakehouse is built there when it has none).

    Raises:
        BookBuildError: an example run failed, or the site has a Sphinx warning.
    """
    started = time.perf_counter()
    home = Path(home).resolve() if home else lakehouse_home()
    book_plan = plan(clean=clean)
    keep = {runs.run_stem(nb, d) for nb, d, _ in book_plan.to_execute}
    keep |= {r.stem for records in book_plan.records.values() for r in records}
    _prune_runs(keep | airflow_example.keep())
    reused = sum(len(r) for r in book_plan.records.values())
    print(f"[book] example runs: {reused} unchanged, {len(book_plan.to_execute)} to execute", flush=True)
    airflow_run = airflow_example.start(home, clean=clean)  # own lakehouse and engine: alongside the drills
    failed = execute(book_plan, home)
    failed += airflow_run.wait()
    write_pages(book_plan)
    _static_assets()
    if book_plan.without_drill:
        print(f"[book] no executed example yet (no drill): {', '.join(book_plan.without_drill)}")
    index = sphinx_build(clean=clean)
    print(f"[book] built in {time.perf_counter() - started:.0f}s; open {index}", flush=True)
    if failed:
        # The site is built (without those examples) so it can be read, but the build did not succeed.
        raise BookBuildError(
            f"{len(failed)} example run(s) failed: {'; '.join(failed)}; see the [book] lines above "
            f"and the executed notebooks {runs.RUNS_DIR}/*.failed.ipynb"
        )
    return index


def main(argv: list[str] | None = None) -> int:
    """`lakehouse book` / `python -m retail_lakehouse.site.book [--clean]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="lakehouse book", description="build the runbook site into _build/html"
    )
    parser.add_argument(
        "--clean", action="store_true", help="re-execute every example run and rebuild all pages"
    )
    args = parser.parse_args(argv)
    try:
        build_book(clean=args.clean)
    except LakehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
