"""A Sphinx extension for the runbook site: plotly.js only on the pages that draw charts, loaded
deferred, and no source maps in the published site.

Named in `_config.yml` (`sphinx.extra_extensions`). A chart's own script waits for
`DOMContentLoaded` (see `_book_runs.site_outputs`), which runs after deferred scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTLY_JS = "plotly.min.js"
CHART_MARKER = "plotly-graph-div"


def _page_scripts(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    if CHART_MARKER in str(context.get("body", "")):
        app.add_js_file(PLOTLY_JS, loading_method="defer")


def _drop_source_maps(app: Any, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        for path in Path(app.outdir).rglob("*.map"):
            path.unlink()


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _page_scripts)
    app.connect("build-finished", _drop_source_maps)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
