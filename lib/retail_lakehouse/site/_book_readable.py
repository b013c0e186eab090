"""Executed examples as a reader at 3 a.m. needs them: the verdict first, each traceback once, tables
that fit the page.

`summary_box` turns the summary an ops notebook printed last (its cell tagged `summary`, see
`retail_lakehouse.ops.summary`) into the box at the top of its example page; `readable_outputs`
shows a Python traceback once per page with the frames of installed packages collapsed, and trims
pandas' HTML tables wider than `MAX_COLUMNS` (a caption names what was left out) and cells longer
than `MAX_CELL_CHARS` (cut between words).
"""

from __future__ import annotations

import re
from typing import Any

MAX_COLUMNS = 10  # a wider table keeps its first columns (the ops modules put the decisive ones first)
MAX_CELL_CHARS = 200  # a longer cell is cut at a word boundary (the downloadable notebook has it whole)
_INSTALLED = re.compile(r"site-packages|dist-packages|<venv>|<python>|/\.venv/|/lib/python3\.\d+/")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')
_TRACE_START = "Traceback (most recent call last):"


def _collapse_installed_frames(lines: list[str]) -> list[str]:
    """Frames of installed packages (site-packages, the venv) folded into one line per run of them."""
    out: list[str] = []
    hidden = 0
    i = 0
    while i < len(lines):
        m = _FRAME.match(_ANSI.sub("", lines[i]))
        if m and _INSTALLED.search(m.group("path")):
            hidden += 1
            i += 1
            while i < len(lines) and lines[i].startswith("    ") and not _FRAME.match(_ANSI.sub("", lines[i])):
                i += 1  # the frame's source line(s)
            continue
        if hidden:
            out.append(f"  ... {hidden} frame(s) in installed packages ...")
            hidden = 0
        out.append(lines[i])
        i += 1
    if hidden:
        out.append(f"  ... {hidden} frame(s) in installed packages ...")
    return out


def dedupe_tracebacks(text: str, seen: set[str] | None = None) -> str:
    """`text` with every Python traceback shown once (later copies replaced by a one-line pointer)
    and the frames of installed packages collapsed; `seen` carries tracebacks across outputs."""
    if _TRACE_START not in text and "File \"" not in text:
        return text
    seen = set() if seen is None else seen
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != _TRACE_START:
            out.append(lines[i])
            i += 1
            continue
        j = i + 1  # the traceback runs to its exception line: the first line not indented after the frames
        while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
            j += 1
        block = lines[i : min(j + 1, len(lines))]
        key = "\n".join(x.strip() for x in block)
        if key in seen:
            last = block[-1].strip() if len(block) > 1 else ""
            out.append(f"(the same traceback as above{': ' + last if last else ''})")
        else:
            seen.add(key)
            out.extend(_collapse_installed_frames(block))
        i = min(j + 1, len(lines))
    return "\n".join(out)


def _error_traceback(frames: list[str], seen: set[str]) -> list[str]:
    """An error output's traceback (one entry per frame, ANSI-coloured): installed frames dropped,
    a traceback already shown replaced by a pointer."""
    key = "\n".join(_ANSI.sub("", f) for f in frames)
    if key in seen:
        return [frames[-1]] if frames else frames
    seen.add(key)
    kept, hidden = [], 0
    for frame in frames:
        m = _FRAME.search(_ANSI.sub("", frame))
        path = m.group("path") if m else ""
        if not path:  # IPython: "File <path>:<line>, in f"
            m2 = re.search(r"File (\S+?):\d+", _ANSI.sub("", frame))
            path = m2.group(1) if m2 else ""
        if path and _INSTALLED.search(path):
            hidden += 1
            continue
        if hidden:
            kept.append(f"  ... {hidden} frame(s) in installed packages ...")
            hidden = 0
        kept.append(frame)
    if hidden:
        kept.append(f"  ... {hidden} frame(s) in installed packages ...")
    return kept


_TABLE = re.compile(r'<table\b[^>]*class="dataframe"[^>]*>.*?</table>', re.S)
_ROW = re.compile(r"<tr\b[^>]*>.*?</tr>", re.S)
_CELL = re.compile(r"<(t[hd])\b[^>]*>.*?</\1>", re.S)
_TAGS = re.compile(r"<[^>]+>")


def _cut_cell(cell: str) -> str:
    m = re.match(r"(<t[hd]\b[^>]*>)(.*)(</t[hd]>)", cell, re.S)
    if not m or "<" in m.group(2) or len(m.group(2)) <= MAX_CELL_CHARS:
        return cell
    import textwrap

    return m.group(1) + textwrap.shorten(m.group(2), MAX_CELL_CHARS, placeholder=" ...") + m.group(3)


def trim_table(html: str, max_columns: int = MAX_COLUMNS) -> str:
    """pandas' HTML tables in `html` with a caption; one wider than `max_columns` keeps its index and
    first `max_columns` columns, internal ones (`_run_id`, ...) left out first (the caption names the
    columns left out); long cells cut between words."""

    def one(match: re.Match[str]) -> str:
        table = match.group(0)
        rows = _ROW.findall(table)
        if not rows or "colspan" in table or "rowspan" in table or "<caption" in table:
            return table
        header = _CELL.findall(rows[0])
        cells_of = [[c.group(0) for c in _CELL.finditer(r)] for r in rows]
        names = [_TAGS.sub("", c).strip() for c in cells_of[0]]
        columns = len(names) - 1  # the first header cell is the index's
        body = len(re.findall(r"<tr\b", table.split("</thead>", 1)[-1])) if "</thead>" in table else len(rows) - 1
        caption = f"{body} row(s), {columns} column(s)"
        if columns > max_columns and header:
            order = sorted(range(1, len(names)), key=lambda i: names[i].startswith("_"))  # internal ones last
            keep = [0, *sorted(order[:max_columns])]
            left_out = [names[i] for i in order[max_columns:] if names[i]]
            caption = (f"{body} row(s); {max_columns} of {columns} columns (left out: "
                       f"{', '.join(left_out)}; the downloadable notebook has them)")
            for row, cells in zip(rows, cells_of, strict=True):
                start = row[: row.index(">") + 1]
                kept = [cells[i] for i in keep if i < len(cells)]
                table = table.replace(row, start + "\n" + "\n".join(kept) + "\n</tr>", 1)
        table = _CELL.sub(lambda c: _cut_cell(c.group(0)), table)
        return re.sub(r"(<table\b[^>]*>)", lambda t: f"{t.group(1)}\n  <caption>{caption}</caption>", table, count=1)

    return _TABLE.sub(one, html)


def readable_outputs(outputs: list[dict[str, Any]], seen: set[str] | None = None) -> list[dict[str, Any]]:
    """Outputs with tracebacks shown once (installed frames collapsed) and wide tables trimmed."""
    seen = set() if seen is None else seen
    kept: list[dict[str, Any]] = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            out = {**out, "text": dedupe_tracebacks(text, seen)}
        elif kind == "error":
            out = {**out, "traceback": _error_traceback(list(out.get("traceback", [])), seen)}
        elif isinstance(out.get("data"), dict):
            data = out["data"]
            html = data.get("text/html")
            html = "".join(html) if isinstance(html, list) else html
            plain = data.get("text/plain")
            plain = "".join(plain) if isinstance(plain, list) else plain
            new = dict(data)
            if html and 'class="dataframe"' in html:
                new["text/html"] = trim_table(html)
            if plain and _TRACE_START in plain:
                new["text/plain"] = dedupe_tracebacks(plain, seen)
            out = {**out, "data": new}
        kept.append(out)
    return kept


def summary_box(nb: Any) -> str | None:
    """The summary box (MyST admonition) of an executed notebook: its cell tagged `summary`."""
    from retail_lakehouse.ops.summary import Summary

    for cell in nb.cells:
        if cell.cell_type != "code" or "summary" not in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out.get("text", "")
                found = Summary.parse("".join(text) if isinstance(text, list) else text)
                if found is not None:
                    return found.markdown()
    return None
