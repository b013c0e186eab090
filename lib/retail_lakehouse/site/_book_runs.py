"""The executed example runs of the runbook site: drill, papermill run, post-processing, cache.

For each drill (`retail_lakehouse.sandbox.drills`), the build breaks the demo lakehouse the drill's way,
runs the drill's ops notebook with papermill on the drill's parameters into
`book/_generated/runs/<notebook>--<drill>.ipynb`, and records what it ran in a `.json` beside it.
The record holds a cache key (notebook source, library source, drill name): an unchanged key means
the run is reused as is, without breaking anything or starting the engine.

The stage that breaks and runs things executes in a child process (`python -m
retail_lakehouse.site._book_runs`) with its own `LAKEHOUSE_HOME` and engine, so building the site never
disturbs the caller's engine or environment (a test session, a notebook kernel).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.core.errors import BookBuildError
from retail_lakehouse.site._book_readable import readable_outputs, summary_box

if TYPE_CHECKING:
    from retail_lakehouse.jobs.kernels import KernelPool

OPS_DIR = PROJECT_ROOT / "ops_notebooks"
GENERATED = PROJECT_ROOT / "book" / "_generated"
RUNS_DIR = GENERATED / "runs"
LIB_DIR = Path(__file__).resolve().parent.parent

# Demo lakehouse made when the home has none: small, so a full site build stays within minutes.
DEMO = {"scale_factor": 0.05, "days": 3, "increments": 1}
# Library files that only shape the site's pages: editing them must not re-run the drills.
_PAGE_ONLY = {"book.py", "_book_pages.py"}
# Which chapter documents which ops notebook (book/<chapter>.md includes _generated/procedures/<nb>.md).
CHAPTERS: dict[str, str] = {
    "job_failure_triage": "failure_handling",
    "quality_failure_triage": "failure_handling",
    "backfill": "backfilling",
    "optimize": "scaling",
    "cost_review": "cost",
    "diagnose_slow_query": "troubleshooting",
    "diagnose_oom": "troubleshooting",
    "schema_evolution": "troubleshooting",
    "diagnose_streaming_lag": "troubleshooting",
    "data_freshness": "monitoring",
    "alerts_review": "monitoring",
    "onboard_source": "onboarding",
    "restore": "disaster_recovery",
    "rebuild_from_source": "disaster_recovery",
}
_READY_MARKER = Path("warehouse") / "retail_datalake" / "local_gold" / "fact_sales" / "_delta_log"


@dataclass
class RunRecord:
    """What one executed example run was made from (stored as `<run>.json`)."""

    drill: str
    notebook: str
    key: str
    description: str = ""
    summary: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    executed_at: str = ""
    seconds: float = 0.0

    @property
    def stem(self) -> str:
        return run_stem(self.notebook, self.drill)


def run_stem(notebook: str, drill: str) -> str:
    """File stem of a run: `<notebook>--<drill>` (its chapter's toc globs `<notebook>--*`), or
    `other/<notebook>--<drill>` for a notebook no chapter documents yet (the appendix globs those)."""
    return f"{notebook}--{drill}" if notebook in CHAPTERS else f"other/{notebook}--{drill}"


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def library_hash() -> str:
    """Hash of the library's source (code and YAML), except the page-only modules."""
    files = sorted(
        p
        for p in LIB_DIR.rglob("*")
        if p.suffix in (".py", ".yaml")
        and p.is_file()
        and "__pycache__" not in p.parts
        and p.name not in _PAGE_ONLY
    )
    return _sha(*(str(p.relative_to(LIB_DIR)).encode() + b"\0" + p.read_bytes() for p in files))


def run_key(notebook: str, drill: str, lib_hash: str) -> str:
    """Cache key of one run: the notebook's source, the library's source and the drill."""
    source = (OPS_DIR / f"{notebook}.ipynb").read_bytes()
    return _sha(source, lib_hash.encode(), drill.encode(), json.dumps(DEMO, sort_keys=True).encode())


def load_record(stem: str) -> RunRecord | None:
    path = RUNS_DIR / f"{stem}.json"
    if not path.exists() or not (RUNS_DIR / f"{stem}.ipynb").exists():
        return None
    try:
        return RunRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def lakehouse_ready(home: Path) -> bool:
    """Whether `home` holds a built lakehouse (gold fact table present)."""
    return (home / _READY_MARKER).is_dir()


# ---------------------------------------------------------------------------------------------
# Post-processing of an executed notebook for the site
# ---------------------------------------------------------------------------------------------

_PLOTLY_JSON = "application/vnd.plotly.v1+json"
_EXTERNAL_SCRIPT = re.compile(
    r"<script[^>]*\bsrc=[\"']https?://[^\"']*[\"'][^>]*>\s*</script>", re.IGNORECASE
)
_FENCE = re.compile(r"^\s*(```|~~~)")


def _plotly_html(figure: dict[str, Any]) -> str:
    import plotly.io as pio

    # plotly.js itself is served once by the site (_static/plotly.min.js): no CDN, no 4 MB per chart;
    # pages load it deferred (site.sphinx_ext), so the chart draws once the document is parsed.
    html = pio.to_html(
        figure,
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        validate=False,
        default_height=450,
    )
    return _deferred(html)


_CHART_SCRIPT = re.compile(r"(<script[^>]*>)((?:(?!</script>).)*?Plotly\.newPlot(?:(?!</script>).)*?)(</script>)", re.S)


def _deferred(html: str) -> str:
    """Chart scripts run on DOMContentLoaded: the site loads plotly.js deferred (site.sphinx_ext),
    after inline scripts but before that event."""
    return _CHART_SCRIPT.sub(
        lambda m: f'{m.group(1)}document.addEventListener("DOMContentLoaded", function () {{{m.group(2)}}});'
        f"{m.group(3)}",
        html,
    )


def _is_plotly_bundle_js(html: str) -> bool:
    return "window.Plotly = Plotly" in html or ("plotly.js v" in html and len(html) > 500_000)


def site_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs as the static site can show them offline.

    A plotly figure (`application/vnd.plotly.v1+json`, which MyST-NB cannot render) becomes an HTML
    div drawn by the site's own plotly.js; the plotly.js copy that the `notebook` renderer embeds is
    dropped; scripts loaded from the network (MathJax from a CDN) are removed.
    """
    kept: list[dict[str, Any]] = []
    for out in outputs:
        data = out.get("data")
        if out.get("output_type") not in ("display_data", "execute_result") or not isinstance(data, dict):
            kept.append(out)
            continue
        html = data.get("text/html")
        html = "".join(html) if isinstance(html, list) else html
        if _PLOTLY_JSON in data:
            figure = data[_PLOTLY_JSON]
            out = {**out, "data": {"text/html": _plotly_html(figure), "text/plain": "<plotly figure>"}}
        elif html and _is_plotly_bundle_js(html):
            continue
        elif html and "Plotly.newPlot" in html:  # a chart the `notebook` renderer drew
            out = {**out, "data": {**data, "text/html": _deferred(_EXTERNAL_SCRIPT.sub("", html))}}
        elif html and "http" in html:
            data = {**data, "text/html": _EXTERNAL_SCRIPT.sub("", html)}
            out = {**out, "data": data}
        kept.append(out)
    return kept


def _demote_headings(source: str) -> str:
    """One level deeper for every markdown heading, so the run page has one title (ours)."""
    lines, fenced = [], False
    for line in source.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and re.match(r"^#{1,5} ", line):
            line = "#" + line
        lines.append(line)
    return "\n".join(lines)


def command_line(
    notebook: str, parameters: dict[str, Any], output: str = "out.ipynb", *, indent: str = ""
) -> str:
    """The papermill command that runs `notebook` with `parameters`, one parameter a line (each
    line but the first prefixed with `indent`), so no parameter hides past the block's edge."""
    lines = [f"papermill ops_notebooks/{notebook}.ipynb {output}"]
    lines += [f"{indent}  -p {k} {_shell_value(v)}" for k, v in parameters.items()]
    return " \\\n".join(lines)


def _shell_value(value: Any) -> str:
    text = str(value)
    if text and re.fullmatch(r"[A-Za-z0-9_.:/,@+-]+|<[A-Z0-9_.-]+>", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def machine_paths() -> list[tuple[str, str]]:
    """(absolute path of this machine, what the site shows instead), longest first: the repository,
    the interpreter's environment, the lakehouse, the temporary folder and the user's home."""
    import tempfile

    found = {
        str(PROJECT_ROOT): "<repo>",
        sys.prefix: "<venv>",
        sys.base_prefix: "<python>",
        os.environ.get("LAKEHOUSE_HOME", ""): "$LAKEHOUSE_HOME",
        tempfile.gettempdir(): "<tmp>",
        str(Path.home()): "~",
    }
    pairs = {os.path.realpath(p): v for p, v in found.items() if p and p != "/"} | {
        p: v for p, v in found.items() if p and p != "/"
    }
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def scrub(value: Any, paths: list[tuple[str, str]]) -> Any:
    """`value` (text, or lists and mappings of it) with this machine's paths replaced."""
    if isinstance(value, str):
        for path, shown in paths:
            value = value.replace(path, shown)
        return value
    if isinstance(value, list):
        return [scrub(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, paths) for k, v in value.items()}
    return value


def prepare_for_site(nb: Any, record: RunRecord) -> Any:
    """Title, provenance note and offline-renderable outputs for an executed notebook, with no
    path of the machine that ran it (papermill's input/output paths, tracebacks, printed paths)."""
    import nbformat

    paths = machine_paths()
    for cell in nb.cells:
        cell.source = scrub(cell.source, paths)
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(scrub(dict(o), paths)) for o in cell.get("outputs", [])]
            # The evidence first: code folds under a toggle (MyST-NB's hide-input), outputs stay open.
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    papermill_meta = nb.metadata.get("papermill")
    if papermill_meta is not None:
        papermill_meta["input_path"] = f"ops_notebooks/{record.notebook}.ipynb"
        papermill_meta["output_path"] = "out.ipynb"
        nb.metadata["papermill"] = scrub(dict(papermill_meta), paths)
    seen: set[str] = set()  # tracebacks already shown on the page
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _demote_headings(cell.source)
        elif cell.cell_type == "code":
            outputs = readable_outputs(site_outputs(list(cell.get("outputs", []))), seen)
            cell.outputs = [nbformat.from_dict(o) for o in outputs]
    intro = (
        f"# Example run: `{record.notebook}` on drill `{record.drill}`\n\n"
        f"{summary_box(nb) or ''}\n"
        f"```{{admonition}} How this run was made\n:class: note\n"
        f"Drill `{record.drill}`: {record.description or record.summary}\n\n"
        f"The notebook was then executed by papermill during the site build ({record.executed_at}, "
        f"{record.seconds:.1f} s) against the local demo lakehouse; every output below is that run's. "
        f"Reproduce it locally with:\n\n"
        f"    lakehouse drill {record.drill}\n"
        f"    {command_line(record.notebook, record.parameters, indent='    ')}\n"
        f"```\n"
    )
    # The verdict first: the summary the notebook printed last, right under the title.
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(scrub(intro, paths)))
    nb.metadata.pop("widgets", None)
    return nb


# ---------------------------------------------------------------------------------------------
# Execution (child process)
# ---------------------------------------------------------------------------------------------


def _prepare_lakehouse(home: Path) -> None:
    from retail_lakehouse.sandbox.demo import run_demo

    if lakehouse_ready(home):
        print(f"[book] demo lakehouse: reusing {home}", flush=True)
        return
    print(f"[book] demo lakehouse: building a small one in {home} ({DEMO})", flush=True)
    if run_demo(**DEMO) != 0:
        raise BookBuildError(f"[book] the demo lakehouse could not be built in {home}; see the job output above")


class RunFailed(BookBuildError):
    """An example run failed (its drill or its notebook)."""


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _execute(notebook: str, drill_name: str, key: str, kernels: KernelPool | None = None) -> RunRecord:
    import nbformat
    import papermill

    from retail_lakehouse.sandbox import drills

    started = time.perf_counter()
    drill = drills.get(drill_name)
    try:
        result = drills.run(drill_name)
    except Exception as exc:
        raise RunFailed(
            f"drill {drill_name} failed: {type(exc).__name__}: {_last_lines(str(exc), 12)}"
        ) from exc
    record = RunRecord(
        drill=drill_name,
        notebook=notebook,
        key=key,
        description=result.description,
        summary=drill.summary,
        parameters={k: v for k, v in result.parameters.items()},
        executed_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    source = OPS_DIR / f"{notebook}.ipynb"
    output = RUNS_DIR / f"{record.stem}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    declared = set(papermill.inspect_notebook(str(source)))
    unknown = sorted(set(record.parameters) - declared)
    if unknown:
        print(
            f"[book] warning: drill {drill_name} passes {unknown}, which {notebook} does not declare",
            flush=True,
        )
    km = kernels.acquire(OPS_DIR) if kernels is not None else None  # forked, library imported
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=record.parameters,
            kernel_name="python3",
            resources={"metadata": {"path": str(OPS_DIR)}},
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,
            execution_timeout=600,
            km=km,
        )
    except Exception as exc:
        output.with_suffix(".json").unlink(missing_ok=True)
        failed = output.with_suffix(".failed.ipynb")
        if output.exists():
            output.replace(failed)
        raise RunFailed(
            f"{notebook} failed on drill {drill_name}: {type(exc).__name__}: {_last_lines(str(exc), 12)}\n"
            f"  executed notebook: {failed}"
        ) from exc
    finally:
        if km is not None and kernels is not None:
            kernels.release(km)
    record.seconds = round(time.perf_counter() - started, 1)
    nb = nbformat.read(output, as_version=4)
    nbformat.write(prepare_for_site(nb, record), output)
    output.with_suffix(".json").write_text(json.dumps(asdict(record), indent=2, default=str) + "\n")
    return record


def execute_runs(home: Path, jobs: list[tuple[str, str, str]]) -> None:
    """Run (notebook, drill, key) jobs in this process, with `home` as the lakehouse."""
    os.environ["LAKEHOUSE_HOME"] = str(home)
    os.environ["LAKEHOUSE_ENV"] = "local"
    os.environ.pop("SPARK_REMOTE", None)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    _prepare_lakehouse(home)
    from retail_lakehouse import engine

    engine.start_local_server()  # the notebooks' kernels share this engine (SPARK_REMOTE)
    from retail_lakehouse.jobs.kernels import KernelPool
    from retail_lakehouse.ops import KERNEL_PRELOAD

    failures: list[str] = []
    pool = KernelPool(size=1, budget=len(jobs), preload=KERNEL_PRELOAD)
    try:
        pool.__enter__()
        # Every run is attempted: one broken procedure must not hide (or block the cache of) the others.
        for notebook, drill_name, key in jobs:
            print(f"[book] drill {drill_name} -> papermill {notebook} ...", flush=True)
            try:
                record = _execute(notebook, drill_name, key, pool)
            except RunFailed as exc:
                failures.append(str(exc))
                print(f"[book]   FAILED: {exc}", flush=True)
                continue
            print(f"[book]   done in {record.seconds:.1f}s: {RUNS_DIR / record.stem}.ipynb", flush=True)
    finally:
        pool.close()
        engine.stop_local_server()
    if failures:
        raise BookBuildError(f"[book] {len(failures)} example run(s) failed:\n" + "\n".join(failures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--jobs", required=True, help="JSON list of [notebook, drill, key]")
    args = parser.parse_args(argv)
    try:
        execute_runs(args.home.resolve(), [tuple(job) for job in json.loads(args.jobs)])
    except BookBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
