"""Read a sample of a source that is not onboarded yet: a JDBC table or JSON-lines landing files."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import ParameterError, SourceError

SAMPLE_ROWS = 5000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SourceSample:
    """Columns and sample rows of a source, as the source gives them.

    Attributes:
        kind: ``jdbc`` (a table of the environment's OLTP database) or ``landing`` (JSON-lines files).
        location: the table name, or the landing folder as given.
        columns: column -> Spark SQL type as read (JDBC: the driver's type; files: from the JSON values).
        rows: up to `SAMPLE_ROWS` rows as dicts.
    """

    kind: Literal["jdbc", "landing"]
    location: str
    columns: dict[str, str]
    rows: list[dict[str, Any]]


def sample_jdbc(table: str, *, env: str = "local", limit: int = SAMPLE_ROWS) -> SourceSample:
    """The columns and first rows of a table of the environment's OLTP database, read through the
    engine's JDBC source (as ingestion will read it).

    Raises:
        ParameterError: the table name is not an identifier.
        SourceError: the database or the table cannot be read (the message says which).
    """
    from retail_lakehouse.pipeline.ingest import read_oltp

    if not _IDENT.match(table):
        raise ParameterError("--jdbc-table", f"{table!r} is not a table name (letters, digits, _)")
    settings = load_settings(env)
    try:
        df = read_oltp(table, f"SELECT * FROM {table} LIMIT {int(limit)}", settings)
    except SourceError as exc:
        raise SourceError(f"cannot onboard {table!r}: its source cannot be read, nothing was written. {exc}") from None
    columns = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    return SourceSample("jdbc", table, columns, [r.asDict() for r in df.collect()])


def _json_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return type(value).__name__  # list / dict: nested values, refused by inference


def _merge(a: str | None, b: str | None) -> str | None:
    if a is None or a == b:
        return b if a is None else a
    if b is None:
        return a
    if {a, b} == {"bigint", "double"}:
        return "double"
    return "string" if "list" not in (a, b) and "dict" not in (a, b) else (a if a in ("list", "dict") else b)


def sample_landing(path: str | Path, *, limit: int = SAMPLE_ROWS) -> SourceSample:
    """The columns and first records of the JSON-lines files (``*.jsonl``) under a folder.

    Raises:
        SourceError: no such folder, no files, or a line that is not a JSON object (file and line named).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SourceError(f"landing folder {folder} does not exist; give the folder the source drops files into")
    files = sorted(p for p in folder.rglob("*.jsonl") if p.is_file())
    if not files:
        raise SourceError(f"no *.jsonl files under {folder}: nothing to infer a schema from")
    rows: list[dict[str, Any]] = []
    types: dict[str, str | None] = {}
    for file in files:
        with file.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{file} line {lineno} is not JSON ({exc.msg}); fix or move the file") from None
                if not isinstance(record, dict):
                    raise SourceError(f"{file} line {lineno} is not a JSON object")
                for key, value in record.items():
                    types[key] = _merge(types.get(key), _json_type(value))
                rows.append(record)
                if len(rows) >= limit:
                    break
        if len(rows) >= limit:
            break
    columns = {k: (v or "string") for k, v in types.items()}
    return SourceSample("landing", str(path), columns, rows)
