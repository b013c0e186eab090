"""Ops procedures of the runbook: the logic behind `ops_notebooks/`, with audit and safety rails.

`KERNEL_PRELOAD` names the modules the project's notebooks import (the pipeline's and every ops
procedure): callers that run notebooks (the CLI, the local workspace, the drills, the book) hand it
to the job runner and the `lakehouse-warm` kernel spec, so kernels start with them imported.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KERNEL_PRELOAD"]

PIPELINE_MODULES = (
    "retail_lakehouse.pipeline.ingest",
    "retail_lakehouse.pipeline.silver",
    "retail_lakehouse.pipeline.gold",
    "retail_lakehouse.pipeline.quality",
    "retail_lakehouse.pipeline.quality_alerts",
)
# What those modules import when first called (each pipeline task's kernel imported delta-rs for
# its writes, about 7 % of the kernels' CPU in a daily increment). Importing is fork-safe: delta-rs
# starts its runtime on first use, in the kernel.
LIBRARIES = ("deltalake", "deltalake.writer", "sqlite3", "pandas.io.formats.html")
KERNEL_PRELOAD: tuple[str, ...] = (
    *PIPELINE_MODULES,
    *LIBRARIES,
    *(f"retail_lakehouse.ops.{p.stem}" for p in sorted(Path(__file__).parent.glob("[a-z]*.py"))),
)
