"""Rows an append-only Delta table gained between two versions, read from its log with delta-rs.

What the change feed would return for such a table (inserts only); used locally, where tables carry
no change feed, to check that reading by change feed and by watermark agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retail_lakehouse.engine._catalog import table_dir

if TYPE_CHECKING:
    import pyarrow as pa

    from retail_lakehouse.core.config import Settings


def rows_added(full_name: str, since_version: int, until_version: int, schema: pa.Schema, settings: Settings) -> pa.Table:
    """The rows of the data files added after `since_version` up to `until_version`, in `schema`'s columns.

    Args:
        full_name: the table's three-part name.
        since_version: the version already read.
        until_version: the version to read up to (included).
        schema: the columns to return (columns a file lacks are null).
        settings: the environment's settings (the local warehouse).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    path = str(table_dir(full_name, settings))

    def files(version: int) -> set[str]:
        return set(DeltaTable(path, version=version).file_uris())

    added = sorted(files(until_version) - files(since_version))
    tables = [pq.read_table(f.removeprefix("file://")) for f in added]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(
        [t.select([c for c in schema.names if c in t.column_names]) for t in tables], promote_options="default"
    )
