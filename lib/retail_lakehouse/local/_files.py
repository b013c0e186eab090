"""Workspace API (import/export/mkdirs/list/get-status/delete) on a folder under LAKEHOUSE_HOME.

Import takes JSON (base64 `content`) or multipart/form-data (the file part as it is, as the SDK's
`workspace.upload` sends it); export answers JSON, or the raw bytes with `direct_download=true`
(`workspace.download`). Objects live at `LAKEHOUSE_HOME/workspace/files/<path>`, byte for byte as
imported; their type and language are kept in `objects.json` beside the folder (a directory is a
real directory).
"""

from __future__ import annotations

import base64
import json
import posixpath
import shutil
import threading
from pathlib import Path
from typing import Any

from databricks.sdk.service import workspace as dbws

from retail_lakehouse.jobs.job_runs import stable_id
from retail_lakehouse.local._common import ApiError, RawBody, as_bool, invalid, not_found, now_ms

MAX_IMPORT_BYTES = 10 * 1024 * 1024
_EXTENSIONS = {".py": "PYTHON", ".sql": "SQL", ".scala": "SCALA", ".r": "R"}
_LANGUAGES = frozenset(lang.value for lang in dbws.Language)


def _content(value: Any) -> bytes:
    """The content of an import: a multipart file part as it is, or base64 text (JSON)."""
    if isinstance(value, bytes):
        return value
    if value is not None and not isinstance(value, str):
        raise invalid(f"content must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value or "", validate=True)
    except ValueError:
        raise ApiError(
            400,
            "MALFORMED_REQUEST",
            "content is not valid base64; in a multipart/form-data request send it as a file part "
            "(with a filename)",
        ) from None


class WorkspaceFiles:
    def __init__(self, root: Path) -> None:
        self.root = root / "files"
        self.index_path = root / "objects.json"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.index: dict[str, dict[str, Any]] = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            self.index = {}

    # -- paths

    @staticmethod
    def _norm(path: Any) -> str:
        if not isinstance(path, str) or not path.startswith("/"):
            raise invalid(f"path must be absolute (start with '/'), got {path!r}")
        norm = posixpath.normpath(path)
        if norm.startswith("//") or ".." in norm.split("/"):
            raise invalid(f"path {path!r} is not valid")
        return "/" if norm == "/" else norm.rstrip("/")

    def _local(self, path: str) -> Path:
        return self.root / path.lstrip("/") if path != "/" else self.root

    def _save_index(self) -> None:
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.index, indent=1))
        tmp.replace(self.index_path)

    def _info(self, path: str) -> dbws.ObjectInfo:
        local = self._local(path)
        if local.is_dir():
            return dbws.ObjectInfo(
                path=path, object_type=dbws.ObjectType.DIRECTORY, object_id=stable_id(f"ws:{path}"), resource_id=str(stable_id(f"ws:{path}"))
            )
        meta = self.index.get(path, {})
        st = local.stat()
        info = dbws.ObjectInfo(
            path=path,
            object_type=dbws.ObjectType(meta.get("object_type", "FILE")),
            object_id=stable_id(f"ws:{path}"),
            resource_id=str(stable_id(f"ws:{path}")),
            created_at=meta.get("created_at"),
            modified_at=meta.get("modified_at", int(st.st_mtime * 1000)),
            size=st.st_size,
        )
        if meta.get("language"):
            info.language = dbws.Language(meta["language"])
        return info

    # -- API

    def import_(self, body: dict[str, Any]) -> dict[str, Any]:
        path = self._norm(body.get("path"))
        fmt = (body.get("format") or "SOURCE").upper()
        if fmt not in ("SOURCE", "JUPYTER", "AUTO", "RAW"):
            raise invalid(f"format {fmt} is not served locally; use SOURCE, JUPYTER, AUTO or RAW")
        content = _content(body.get("content"))
        if len(content) > MAX_IMPORT_BYTES:
            raise ApiError(400, "MAX_NOTEBOOK_SIZE_EXCEEDED", f"content exceeds {MAX_IMPORT_BYTES} bytes")
        language = body.get("language") or None
        if language is not None and language not in _LANGUAGES:
            raise invalid(f"language {language!r} is not valid; use one of {', '.join(sorted(_LANGUAGES))}")
        object_type = "FILE"
        if fmt == "JUPYTER" or (fmt == "AUTO" and path.endswith(".ipynb")):
            object_type, language = "NOTEBOOK", language or "PYTHON"
            if fmt == "AUTO":
                path, fmt = path[: -len(".ipynb")], "JUPYTER"
        elif fmt == "SOURCE":
            if not language:
                raise invalid("language is required when format is SOURCE")
            object_type = "NOTEBOOK"
        elif fmt == "AUTO" and content.startswith(b"# Databricks notebook source"):
            ext = posixpath.splitext(path)[1].lower()
            object_type, language = "NOTEBOOK", _EXTENSIONS.get(ext, "PYTHON")
            path = path[: -len(ext)] if ext in _EXTENSIONS else path
        local = self._local(path)
        with self._lock:
            if local.is_dir():
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{path} is a directory")
            if local.exists() and not as_bool(body.get("overwrite", False)):
                raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{path} already exists; pass overwrite=true")
            if not local.parent.is_dir():
                local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(content)
            previous = self.index.get(path, {})
            self.index[path] = {
                "object_type": object_type,
                "language": language,
                "format": fmt,
                "created_at": previous.get("created_at", now_ms()),
                "modified_at": now_ms(),
            }
            self._save_index()
        return {}

    def export(self, q: dict[str, Any]) -> dict[str, Any] | RawBody:
        """An object's content: JSON with base64 `content`, or the bytes (`direct_download=true`)."""
        path = self._norm(q.get("path"))
        local = self._local(path)
        if local.is_dir():
            raise invalid(f"{path} is a directory; folders are not exported locally, export its objects")
        if not local.is_file():
            raise not_found(f"Path ({path}) doesn't exist.")
        if as_bool(q.get("direct_download", False)):
            return RawBody((local.read_bytes(),), "application/octet-stream")
        meta = self.index.get(path, {})
        fmt = (q.get("format") or "SOURCE").upper()
        return dbws.ExportResponse(
            content=base64.b64encode(local.read_bytes()).decode(),
            file_type="ipynb" if meta.get("format") == "JUPYTER" else None,
        ).as_dict() | ({"format": fmt} if fmt else {})

    def mkdirs(self, body: dict[str, Any]) -> dict[str, Any]:
        path = self._norm(body.get("path"))
        local = self._local(path)
        if local.is_file():
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{path} exists and is not a directory")
        local.mkdir(parents=True, exist_ok=True)
        return {}

    def list(self, q: dict[str, Any]) -> dict[str, Any]:
        path = self._norm(q.get("path"))
        local = self._local(path)
        if not local.exists():
            raise not_found(f"Path ({path}) doesn't exist.")
        if local.is_file():
            return dbws.ListResponse(objects=[self._info(path)]).as_dict()
        children = sorted(local.iterdir())
        objects = [self._info(posixpath.join(path, c.name)) for c in children]
        return dbws.ListResponse(objects=objects).as_dict()

    def get_status(self, q: dict[str, Any]) -> dict[str, Any]:
        path = self._norm(q.get("path"))
        if not self._local(path).exists():
            raise not_found(f"Path ({path}) doesn't exist.")
        return self._info(path).as_dict()

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        path = self._norm(body.get("path"))
        if path == "/":
            raise invalid("the workspace root cannot be deleted")
        local = self._local(path)
        if not local.exists():
            raise not_found(f"Path ({path}) doesn't exist.")
        with self._lock:
            if local.is_dir():
                if any(local.iterdir()) and not as_bool(body.get("recursive", False)):
                    raise ApiError(400, "DIRECTORY_NOT_EMPTY", f"Folder ({path}) is not empty; pass recursive=true")
                shutil.rmtree(local)
                for key in [k for k in self.index if k == path or k.startswith(path + "/")]:
                    del self.index[key]
            else:
                local.unlink()
                self.index.pop(path, None)
            self._save_index()
        return {}

    # -- for jobs

    def notebook(self, path: str) -> Path | None:
        """A local .ipynb for a notebook path: a local file, or a JUPYTER notebook of the workspace."""
        p = Path(path)
        if p.is_absolute():
            for c in ([p] if p.suffix == ".ipynb" else [p.with_name(p.name + ".ipynb"), p]):
                if c.is_file() and c.suffix == ".ipynb":
                    return c
        try:
            norm = self._norm(path)
        except ApiError:
            return None
        meta = self.index.get(norm)
        local = self._local(norm)
        if meta and meta.get("object_type") == "NOTEBOOK" and meta.get("format") == "JUPYTER" and local.is_file():
            target = self.root.parent / "_notebooks" / (norm.lstrip("/") + ".ipynb")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            return target
        return None
