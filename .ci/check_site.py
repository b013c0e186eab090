"""Fail when the built site misses an executed example for a procedure listed on its index page.

Reads `_build/html/index.html`: every row of the procedures table (the one whose header has an
"executed example" column) must link at least one example page, and that page must exist and hold
executed output. Prints what is missing and exits 1; standard library only.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path


class _Tables(HTMLParser):
    """Rows of every table: each cell's text and the hrefs inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, list[str]]]]] = []
        self._cell: tuple[list[str], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            self._cell = ([], [])
        elif tag == "a" and self._cell is not None:
            href = dict(attrs).get("href")
            if href:
                self._cell[1].append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            text, links = self._cell
            self.tables[-1][-1].append((" ".join("".join(text).split()), links))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)


def problems(html_dir: Path) -> tuple[int, list[str]]:
    """(procedures listed, what is wrong) for the site in `html_dir`."""
    index = html_dir / "index.html"
    if not index.exists():
        return 0, [f"{index} does not exist: the site was not built"]
    text = index.read_text(encoding="utf-8")
    redirect = re.search(r'http-equiv="refresh" content="\d+;\s*url=([^"]+)"', text, re.IGNORECASE)
    if redirect:  # Jupyter Book's index.html points at the root page
        index = html_dir / redirect.group(1)
        if not index.exists():
            return 0, [f"{index} (the root page) does not exist: the site was not built"]
        text = index.read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(text)
    found: list[str] = []
    listed = 0
    for table in parser.tables:
        if not table or not any("executed example" in text for text, _ in table[0]):
            continue
        column = next(i for i, (text, _) in enumerate(table[0]) if "executed example" in text)
        for row in table[1:]:
            listed += 1
            name, (text, links) = row[0][0], row[column]
            pages = [(index.parent / href.split("#")[0]).resolve() for href in links]
            if not pages:
                found.append(f"{name}: no executed example ({text})")
            for page in pages:
                if not page.exists():
                    found.append(f"{name}: example page {page.relative_to(html_dir.resolve())} is missing")
                elif "cell_output" not in page.read_text(encoding="utf-8"):
                    found.append(f"{name}: example page {page.relative_to(html_dir.resolve())} has no executed output")
    if not listed:
        found.append("the index page lists no procedure (no table with an 'executed example' column)")
    return listed, found


def main() -> int:
    html_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    listed, found = problems(html_dir)
    for line in found:
        print(f"site check: {line}", file=sys.stderr)
    if found:
        return 1
    print(f"site check: {listed} procedures listed, each with an executed example")
    return 0


if __name__ == "__main__":
    sys.exit(main())
