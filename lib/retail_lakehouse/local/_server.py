"""The HTTP server of the local workspace: routing, auth, errors, start and stop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from databricks.sdk.service import sql as dbsql

from retail_lakehouse.local import _notifications
from retail_lakehouse.local._clusters import ClustersService
from retail_lakehouse.local._common import WORKSPACE_ID, ApiError, RawBody, as_int, invalid
from retail_lakehouse.local._files import WorkspaceFiles
from retail_lakehouse.local._jobs import JobsService
from retail_lakehouse.local._results import LINK_PATH, ChunkLimits
from retail_lakehouse.local._statements import WAREHOUSE_ID, StatementService

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_CHUNK_ROWS = 10_000
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024

Handler = Callable[[dict[str, Any], dict[str, Any], re.Match[str]], dict[str, Any] | RawBody]
_LINK = re.compile(re.escape(LINK_PATH) + r"/(?P<id>[^/]+)/(?P<n>\d+)$")


def workspace_dir() -> Path:
    from retail_lakehouse.core.config import lakehouse_home

    return lakehouse_home() / "workspace"


def load_token(create: bool = True) -> str | None:
    """The workspace's token (generated on first use, file mode 0600)."""
    path = workspace_dir() / ".token"
    if path.is_file():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "dapi" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


@dataclass
class LocalWorkspace:
    """A running local workspace.

    Attributes:
        host: base URL, e.g. ``http://127.0.0.1:43123``.
        token: the bearer token clients must send.
        port: the TCP port.
    """

    host: str
    token: str = field(repr=False)
    port: int
    env: str
    statements: StatementService = field(repr=False)
    jobs: JobsService = field(repr=False)
    files: WorkspaceFiles = field(repr=False)
    clusters: ClustersService = field(repr=False)
    _httpd: ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop serving (runs in progress go on in their threads)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self.statements.shutdown()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()


def _warehouse() -> dict[str, Any]:
    return dbsql.GetWarehouseResponse(
        id=WAREHOUSE_ID,
        name="Local warehouse (embedded engine)",
        state=dbsql.State.RUNNING,
        cluster_size="2X-Small",
        min_num_clusters=1,
        max_num_clusters=1,
        num_clusters=1,
        auto_stop_mins=0,
        creator_name="local-user",
        warehouse_type=dbsql.GetWarehouseResponseWarehouseType.PRO,
        enable_serverless_compute=True,
        enable_photon=False,
    ).as_dict()


def _routes(ws: LocalWorkspace) -> list[tuple[str, re.Pattern[str], Handler]]:
    st, jobs, files = ws.statements, ws.jobs, ws.files
    v = r"/api/2\.[012]"
    table: list[tuple[str, str, Handler]] = [
        ("POST", r"/api/2\.0/sql/statements/?", lambda q, b, m: st.execute(b)),
        ("GET", r"/api/2\.0/sql/statements/(?P<id>[^/]+)", lambda q, b, m: st.get(m["id"])),
        (
            "GET",
            r"/api/2\.0/sql/statements/(?P<id>[^/]+)/result/chunks/(?P<n>[^/]+)",
            lambda q, b, m: st.chunk(m["id"], as_int(m["n"], "chunk_index")),
        ),
        ("POST", r"/api/2\.0/sql/statements/(?P<id>[^/]+)/cancel", lambda q, b, m: st.cancel(m["id"])),
        ("GET", r"/api/2\.0/sql/history/queries", lambda q, b, m: st.history(q)),
        ("GET", r"/api/2\.0/sql/warehouses/?", lambda q, b, m: {"warehouses": [_warehouse()]}),
        ("GET", r"/api/2\.0/sql/warehouses/(?P<id>[^/]+)", lambda q, b, m: _get_warehouse(m["id"])),
        ("GET", v + r"/jobs/list", lambda q, b, m: jobs.list_jobs(q)),
        ("GET", v + r"/jobs/get", lambda q, b, m: jobs.get_job(q)),
        ("POST", v + r"/jobs/create", lambda q, b, m: jobs.create(b)),
        ("POST", v + r"/jobs/reset", lambda q, b, m: jobs.reset(b)),
        ("POST", v + r"/jobs/delete", lambda q, b, m: jobs.delete(b)),
        ("POST", v + r"/jobs/run-now", lambda q, b, m: jobs.run_now(b)),
        ("POST", v + r"/jobs/runs/submit", lambda q, b, m: jobs.submit(b)),
        ("GET", v + r"/jobs/runs/get", lambda q, b, m: jobs.get_run(q)),
        ("GET", v + r"/jobs/runs/get-output", lambda q, b, m: jobs.get_output(q)),
        ("GET", v + r"/jobs/runs/list", lambda q, b, m: jobs.list_runs(q)),
        ("POST", v + r"/jobs/runs/cancel", lambda q, b, m: jobs.cancel(b)),
        ("POST", v + r"/jobs/runs/repair", lambda q, b, m: jobs.repair(b)),
        ("GET", v + r"/clusters/list", lambda q, b, m: ws.clusters.list_clusters(q)),
        ("GET", v + r"/clusters/get", lambda q, b, m: ws.clusters.get_cluster(q)),
        ("POST", v + r"/clusters/events", lambda q, b, m: ws.clusters.events(b)),
        ("POST", r"/api/2\.0/workspace/import", lambda q, b, m: files.import_(b)),
        ("GET", r"/api/2\.0/workspace/export", lambda q, b, m: files.export(q)),
        ("POST", r"/api/2\.0/workspace/mkdirs", lambda q, b, m: files.mkdirs(b)),
        ("GET", r"/api/2\.0/workspace/list", lambda q, b, m: files.list(q)),
        ("GET", r"/api/2\.0/workspace/get-status", lambda q, b, m: files.get_status(q)),
        ("POST", r"/api/2\.0/workspace/delete", lambda q, b, m: files.delete(b)),
        ("GET", r"/api/2\.0/notification-destinations/?", lambda q, b, m: _notifications.list_destinations(q)),
        (
            "GET",
            r"/api/2\.0/notification-destinations/(?P<id>[^/]+)",
            lambda q, b, m: _notifications.get_destination(m["id"]),
        ),
    ]
    from retail_lakehouse.local import _airflow_compat

    # The Airflow Databricks provider's calls come first: the first matching route wins.
    return _airflow_compat.routes(ws) + [(method, re.compile(pattern + "$"), fn) for method, pattern, fn in table]


def _get_warehouse(warehouse_id: str) -> dict[str, Any]:
    if warehouse_id != WAREHOUSE_ID:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"warehouse {warehouse_id!r} does not exist; use {WAREHOUSE_ID!r}")
    return _warehouse()


def _query(raw: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in parse_qs(raw, keep_blank_values=True).items():
        out[key] = values[0] if len(values) == 1 else values
    return out


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """A request body as a dict: a JSON object, or the fields of a multipart/form-data body."""
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        return parse_multipart(raw, content_type)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "MALFORMED_REQUEST", f"could not parse the request body as JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "the request body must be a JSON object")
    return body


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a multipart/form-data body (RFC 7578), as `requests` and `curl -F` send them.

    A part with a filename (a file) is kept as bytes, byte for byte; any other part is text (UTF-8).

    Raises:
        ApiError: 400 INVALID_PARAMETER_VALUE when the body does not follow its boundary.
    """
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200 or not boundary.isascii():
        raise invalid(
            "multipart/form-data request without a boundary: "
            "send 'Content-Type: multipart/form-data; boundary=...'"
        )
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + raw).split(delimiter)
    if len(pieces) < 2:
        raise invalid(f"multipart/form-data body has no part starting with its boundary --{boundary}")
    fields: dict[str, Any] = {}
    for n, piece in enumerate(pieces[1:], start=1):
        if piece.startswith(b"--"):
            return fields
        head, sep, content = piece.lstrip(b" \t").partition(b"\r\n\r\n")
        if not head.startswith(b"\r\n") or not sep:
            raise invalid(f"multipart/form-data part {n}: no headers followed by an empty line (CRLF CRLF)")
        headers = HeaderParser().parsestr(head[2:].decode("utf-8", errors="replace"))
        name = collapse_rfc2231_value(headers.get_param("name", "", header="Content-Disposition"))
        if headers.get_content_disposition() != "form-data" or not name:
            raise invalid(
                f"multipart/form-data part {n} needs a 'Content-Disposition: form-data; name=...' header"
            )
        if headers.get_param("filename", header="Content-Disposition") is not None:
            fields[name] = content
            continue
        try:
            fields[name] = content.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(
                f"multipart/form-data field {name!r} is not UTF-8 text; send a file as a part with a filename"
            ) from None
    raise invalid(f"multipart/form-data body ends before its closing boundary --{boundary}--")


class _Handler(BaseHTTPRequestHandler):
    """Serves the routes of one workspace (`ws`, `routes`: set on the class `_handler_class` makes)."""

    protocol_version = "HTTP/1.1"
    server_version = "LakehouseLocalWorkspace/1.0"
    ws: LocalWorkspace
    routes: list[tuple[str, re.Pattern[str], Handler]]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)  # never the headers: no token in logs

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        try:
            status, body = self._dispatch(method)
        except ApiError as exc:
            status, body = exc.status, exc.body()
        except Exception as exc:  # a bug in a handler: answer 500, keep serving
            log.exception("local workspace: %s %s failed", method, urlsplit(self.path).path)
            status, body = 500, {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}
        self._send(status, body)

    def _dispatch(self, method: str) -> tuple[int, dict[str, Any] | RawBody]:
        ws = self.ws
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(
                413, "REQUEST_LIMIT_EXCEEDED", f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}"
            )
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if method == "GET" and url.path == "/.well-known/databricks-config":
            # Public on Databricks too: the SDK's host discovery (no secrets in it).
            return 200, {"oidc_endpoint": f"{ws.host}/oidc", "workspace_id": WORKSPACE_ID}
        link = _LINK.match(url.path) if method == "GET" else None
        if link:
            # A result chunk's external link: the signature in the URL is the credential, as
            # with a presigned cloud storage URL; the bearer token must not be sent.
            auth = self.headers.get("Authorization")
            return 200, ws.statements.download(link["id"], int(link["n"]), _query(url.query), auth)
        _authenticate(self.headers.get("Authorization"), ws.token)
        body = _parse_body(raw, self.headers.get("Content-Type") or "")
        return 200, _route(self.routes, method, url.path.rstrip("/") or "/", _query(url.query), body)

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # small JSON answers: no Nagle/delayed-ACK stalls
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status: int, body: dict[str, Any] | RawBody) -> None:
        raw = body if isinstance(body, RawBody) else RawBody((json.dumps(body).encode(),))
        try:
            self.send_response(status)
            self.send_header("Content-Type", raw.content_type)
            self.send_header("Content-Length", str(raw.size))
            if self.close_connection:
                self.send_header("Connection", "close")
            if len(raw.parts) == 1 and raw.size < 65536:
                self._headers_buffer.append(b"\r\n" + bytes(raw.parts[0]))  # headers and body in one write
                self.flush_headers()
            else:
                self.end_headers()
                for part in raw.parts:  # large bodies: each part as it is (Arrow buffers), no joined copy
                    self.wfile.write(memoryview(part))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away: nothing to answer



def _authenticate(auth: str | None, token: str) -> None:
    """Raise unless `auth` is `Bearer <the workspace's token>`."""
    if not auth:
        raise ApiError(401, "UNAUTHENTICATED", "no credentials: send 'Authorization: Bearer <token>'")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "PERMISSION_DENIED", "invalid access token")


def _route(
    routes: list[tuple[str, re.Pattern[str], Handler]], method: str, path: str, query: dict[str, Any], body: Any
) -> dict[str, Any] | RawBody:
    """The answer of the first route matching `method` and `path` (405/404 when none)."""
    known_path = False
    for route_method, pattern, fn in routes:
        m = pattern.match(path)
        if m:
            known_path = True
            if route_method == method:
                return fn(query, body, m)
    if known_path:
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on {path}")
    raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")


def _handler_class(ws: LocalWorkspace, routes: list[tuple[str, re.Pattern[str], Handler]]) -> type:
    """A request handler class bound to one workspace and its routes."""
    return type("_BoundHandler", (_Handler,), {"ws": ws, "routes": routes})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("local workspace: connection from %s ended with an error", client_address, exc_info=True)


def start(
    port: int = 0,
    *,
    env: str = "local",
    bundle_path: str | Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    link_chunk_rows: int = ChunkLimits.link_rows,
    link_chunk_bytes: int = ChunkLimits.link_bytes,
    background: bool = True,
) -> LocalWorkspace:
    """Start a local workspace on 127.0.0.1.

    Args:
        port: TCP port (0: any free port).
        env: environment of the engine and the runner (`local`).
        bundle_path: bundle whose jobs are registered (default `databricks.yml`).
        chunk_rows: most rows in one INLINE result chunk of a statement.
        chunk_bytes: about the most bytes of JSON in one INLINE result chunk.
        link_chunk_rows: most rows in one EXTERNAL_LINKS chunk.
        link_chunk_bytes: about the most bytes (Arrow) in one EXTERNAL_LINKS chunk.
        background: serve from a daemon thread (False: call `serve_forever()` yourself).

    Returns:
        The running workspace; `stop()` it when done.
    """
    root = workspace_dir()
    root.mkdir(parents=True, exist_ok=True)
    token = load_token()
    assert token is not None
    files = WorkspaceFiles(root)
    jobs = JobsService(
        home=root.parent, env=env, bundle_path=Path(bundle_path) if bundle_path else None, resolve_notebook=files.notebook
    )
    statements = StatementService(
        env=env,
        chunk_rows=chunk_rows,
        chunk_bytes=chunk_bytes,
        link_chunk_rows=link_chunk_rows,
        link_chunk_bytes=link_chunk_bytes,
    )
    httpd = _Server(("127.0.0.1", port), BaseHTTPRequestHandler)
    actual = httpd.server_address[1]
    ws = LocalWorkspace(
        host=f"http://127.0.0.1:{actual}",
        token=token,
        port=actual,
        env=env,
        statements=statements,
        jobs=jobs,
        files=files,
        clusters=ClustersService(env),
        _httpd=httpd,
    )
    statements.host = ws.host
    httpd.RequestHandlerClass = _handler_class(ws, _routes(ws))
    if background:
        ws._thread = threading.Thread(target=httpd.serve_forever, name="local-workspace", daemon=True)
        ws._thread.start()
    return ws
