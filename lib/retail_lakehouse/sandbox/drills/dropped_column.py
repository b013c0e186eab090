"""Drill: a column vanished from silver.customers (a faulty rewrite renamed `phone` to `phone_number`)."""

from __future__ import annotations

from retail_lakehouse.sandbox.drills import DrillResult, register

REF, COLUMN, RENAMED = "silver.customers", "phone", "phone_number"


@register("dropped_column", notebook="restore",
          summary="silver.customers rewritten without `phone` -> schema_drift fails; restore the version before")
def dropped_column() -> DrillResult:
    """Overwrite silver.customers with `phone` renamed in place, replacing the table's schema.

    The column keeps its position and type (a rename), so the restore notebook can still compare the
    versions row by row; for readers of `phone` it is gone.
    """
    from deltalake import DeltaTable, write_deltalake

    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings
    from retail_lakehouse.sandbox.drills import _local

    settings = load_settings("local")
    path = str(engine.table_dir(_local.full(REF), settings))
    version = _local.version(REF)
    data = DeltaTable(path).to_pyarrow_table()
    renamed = data.rename_columns([RENAMED if c == COLUMN else c for c in data.column_names])
    write_deltalake(path, renamed, mode="overwrite", schema_mode="overwrite")
    engine.register_tables(engine.get_spark("local"), settings)  # the session sees the new schema
    return DrillResult(
        name="dropped_column",
        notebook="restore",
        description=f"{REF} was rewritten with its column {COLUMN!r} renamed {RENAMED!r}: schema_drift reports "
        f"{COLUMN} removed and {RENAMED} added (against the registry and since the last quality run). "
        f"Restore version {version}.",
        parameters={"env": "local", "table": REF, "version": str(version), "dry_run": False},
        facts={"table": REF, "column": COLUMN, "renamed": RENAMED, "check": "schema_drift", "version_before": version},
    )
