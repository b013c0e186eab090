"""The local workspace: the subset of the Databricks REST API the project uses, on 127.0.0.1.

Like LocalStack for AWS: ops code talks to it through `databricks-sdk` exactly as to a real
workspace. SQL statements run on the embedded engine, jobs on the local runner; responses are
built from the SDK's own dataclasses. See `retail_lakehouse.databricks.workspace.connect`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from retail_lakehouse.local._server import LocalWorkspace, load_token, workspace_dir
from retail_lakehouse.local._server import start as _start

__all__ = ["LocalWorkspace", "current", "load_token", "start", "stop", "workspace_dir"]

_lock = threading.Lock()
_current: LocalWorkspace | None = None


def start(port: int = 0, *, bundle_path: str | Path | None = None, **options: object) -> LocalWorkspace:
    """Start the in-process local workspace (a background thread) and make it the current one.

    Args:
        port: TCP port on 127.0.0.1 (0: any free port).
        bundle_path: bundle whose jobs are registered (default `databricks.yml`).
        **options: `env`, `chunk_rows`, `chunk_bytes`, `link_chunk_rows`, `link_chunk_bytes` (see `_server.start`).
    """
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
        _current = _start(port, bundle_path=bundle_path, **options)  # type: ignore[arg-type]
        return _current


def stop() -> None:
    """Stop the in-process local workspace, if any."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            _current = None


def current() -> LocalWorkspace | None:
    """The in-process local workspace, if one runs."""
    return _current
