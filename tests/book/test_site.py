"""The built runbook site in a real headless Chromium, offline: pages load, links resolve, charts draw.

Chromium is Debian's `chromium` (installed by `make` set-up); it reaches only the local http.server
that serves `_build/html`: anything else the site asks for fails, and is reported.
"""

from __future__ import annotations

import html.parser
import re
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml

from retail_lakehouse.core.config import PROJECT_ROOT
from tests.book._browser import PageReport, find_chromium, visit_pages

pytestmark = pytest.mark.slow


def toc_pages(site: Path) -> list[str]:
    """HTML pages of every toc entry: the files, and what each glob matched in the build."""
    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    files, globs = [toc["root"]], []

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            if "glob" in entry:
                globs.append(entry["glob"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    pages = [f"{f}.html" for f in files]
    for pattern in globs:
        pages += sorted(str(p.relative_to(site)) for p in site.glob(f"{pattern}.html"))
    return pages


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if value and (
                (name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("script", "img"))
            ):
                self.refs.append(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(errors="replace"))
    return parser


@pytest.fixture(scope="session")
def pages(site) -> list[str]:
    return toc_pages(site)


@pytest.fixture(scope="session")
def reports(site, pages) -> dict[str, PageReport]:
    binary = find_chromium()
    if binary is None:
        pytest.fail("no chromium: install Debian's (apt-get install -y chromium); `make` set-up does it")
    return visit_pages(binary, site, pages)


def test_every_toc_entry_is_built(site, pages):
    missing = [p for p in pages if not (site / p).exists()]
    assert not missing, f"toc entries without a page: {missing}"
    runs_dir = PROJECT_ROOT / "book" / "_generated" / "runs"
    runs = sorted(p.stem for p in runs_dir.rglob("*.ipynb") if not p.name.endswith(".failed.ipynb"))
    built = {Path(p).stem for p in pages}
    assert set(runs) <= built, f"executed runs not in the toc: {sorted(set(runs) - built)}"


def test_internal_links_resolve(site, pages):
    broken = []
    cache: dict[Path, _Links] = {}
    for page in pages:
        path = site / page
        for ref in cache.setdefault(path, _parse(path)).refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith(("//", "mailto:", "javascript:")):
                continue
            target_ref, fragment = urldefrag(ref)
            target = (path.parent / unquote(urlsplit(target_ref).path)).resolve() if target_ref else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page}: {ref}")
                continue
            if fragment and target.suffix == ".html":
                ids = cache.setdefault(target, _parse(target)).ids
                if unquote(fragment) not in ids:
                    broken.append(f"{page}: {ref} (no id {fragment!r})")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_no_path_of_the_building_machine(site):
    """Pages and downloadable notebooks name no folder of the machine that built them: not the
    repository, the virtualenv, the lakehouse, the temporary folder or the user's home."""
    import sys
    import tempfile

    from retail_lakehouse.core.config import PROJECT_ROOT

    machine = {str(PROJECT_ROOT), sys.prefix, tempfile.gettempdir(), str(Path.home())} - {"/", ""}
    leaks = []
    for path in sorted(site.rglob("*")):
        if path.suffix not in (".html", ".ipynb", ".md", ".txt", ".js") or "_static" in path.parts:
            continue
        text = path.read_text(errors="replace")
        leaks += [f"{path.relative_to(site)}: {m}" for m in sorted(machine) if m in text]
    assert not leaks, "\n".join(leaks[:30])


def test_plotly_only_on_pages_with_charts_and_deferred(site, pages):
    wrong = []
    for page in pages:
        text = (site / page).read_text(errors="replace")
        chart = "plotly-graph-div" in text
        script = re.search(r"<script[^>]*plotly\.min\.js[^>]*>", text)
        if chart != bool(script) or (script and "defer" not in script.group(0)):
            wrong.append(f"{page}: chart={chart} script={script.group(0) if script else None}")
    assert not wrong, "\n".join(wrong)


def test_no_source_maps_are_published(site):
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*.map")) == []


def test_no_reference_to_the_network(site, pages):
    """No script, stylesheet or image comes from elsewhere (plotly.js and MathJax included)."""
    external = []
    for page in pages:
        text = (site / page).read_text(errors="replace")
        for match in re.finditer(r"<(script|link|img)\b[^>]*\b(src|href)=[\"'](https?:)?//[^\"']+", text):
            tag = match.group(0)
            if match.group(1) == "link" and not re.search(
                r"rel=[\"'](stylesheet|preload|modulepreload)", tag
            ):
                continue
            external.append(f"{page}: {tag[:160]}")
    assert not external, "\n".join(external)


def test_every_page_loads(reports):
    failed = [f"{page}: title={r.title!r}" for page, r in reports.items() if not r.loaded or not r.title]
    assert not failed, failed


def test_no_console_errors(reports):
    errors = [f"{page}: {e}" for page, r in reports.items() for e in r.errors]
    assert not errors, "\n".join(errors)


def test_no_request_leaves_the_machine(reports):
    external = [f"{page}: {u}" for page, r in reports.items() for u in r.external_requests]
    assert not external, "\n".join(external)


def test_charts_render(site, reports):
    with_charts = {page: r for page, r in reports.items() if "plotly-graph-div" in (site / page).read_text()}
    undrawn = [
        f"{p}: {r.charts_rendered}/{r.charts}" for p, r in with_charts.items() if r.charts_rendered < r.charts
    ]
    assert not undrawn, f"charts not drawn: {undrawn}"
    assert all(r.charts for r in with_charts.values())


def test_runs_have_charts_when_the_notebook_draws_them(site):
    """A notebook that makes plotly figures shows them on its run page (converted, not dropped)."""
    runs = PROJECT_ROOT / "book" / "_generated" / "runs"
    for notebook in runs.rglob("*.ipynb"):
        if '"text/plain": "<plotly figure>"' in notebook.read_text():
            page = site / notebook.relative_to(PROJECT_ROOT).with_suffix(".html")
            assert "plotly-graph-div" in page.read_text(), page


def test_every_example_page_opens_with_its_summary_box(site):
    """Under the title, before the provenance note, the code and its outputs: the run's verdict."""
    runs = PROJECT_ROOT / "book" / "_generated" / "runs"
    pages = sorted(runs.rglob("*.ipynb"))
    assert pages
    for notebook in pages:
        if notebook.name.endswith(".failed.ipynb"):
            continue
        text = (site / notebook.relative_to(PROJECT_ROOT).with_suffix(".html")).read_text()
        main = text[text.index("<h1"):]
        box = main.find("summary-box")
        assert box != -1, f"{notebook.name}: no summary box"
        assert box < main.index("How this run was made") < main.index("cell_input"), notebook.name
        for label in ("Symptom:", "Diagnosis:", "Evidence:", "Next step:", "Outcome:"):
            assert label in main[box : main.index("How this run was made")], (notebook.name, label)


def test_example_pages_show_a_traceback_once_and_no_installed_frames(site):
    runs = site / "book" / "_generated" / "runs"
    for page in runs.rglob("*.html"):
        text = page.read_text()
        for block in re.findall(r"<pre>(.*?)</pre>", text, re.S):
            assert block.count("Traceback (most recent call last)") <= 1, page.name
        assert "site-packages" not in text, page.name
