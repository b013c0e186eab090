"""The SDK's standard workspace upload and download against the local workspace.

`w.workspace.upload` sends POST /api/2.0/workspace/import as multipart/form-data and
`w.workspace.download` asks GET /api/2.0/workspace/export?direct_download=true for the raw bytes;
the JSON `import_`/`export` (base64 content) go on working beside them. Real databricks-sdk, real
server, no mocks.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import requests
from databricks.sdk.errors import DatabricksError, NotFound, ResourceAlreadyExists
from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language, ObjectType

BUNDLE = Path(__file__).resolve().parents[1] / "fixtures" / "databricks_test.yml"
ROOT = "/Users/local-user/sdk_files"
# Every byte value, CRLFs, a fake boundary line and a trailing CRLF: what a naive parser would mangle.
BINARY = bytes(range(256)) + b"\r\n--boundary\r\n\r\nContent-Disposition: x\r\n" + bytes(range(256))[::-1]
BINARY += b"\r\n"
MULTIPART = "multipart/form-data; boundary=b"
NOTEBOOK = b"# Databricks notebook source\nprint('hello')\n\n# COMMAND ----------\n\nx = 1\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(isolated_home):
    """A local workspace on a fresh LAKEHOUSE_HOME, serving the test bundle."""
    from retail_lakehouse import local as local_workspace

    workspace = local_workspace.start(bundle_path=BUNDLE)
    yield workspace
    local_workspace.stop()


@pytest.fixture(scope="module")
def w(ws):
    from retail_lakehouse.databricks.workspace import _local_client

    client = _local_client(ws.host, ws.token)
    client.workspace.mkdirs(ROOT)
    return client


def post_import(ws, body: bytes, content_type: str) -> requests.Response:
    return requests.post(
        f"{ws.host}/api/2.0/workspace/import",
        data=body,
        headers={"Authorization": f"Bearer {ws.token}", "Content-Type": content_type},
        timeout=30,
    )


def test_upload_then_download_round_trip(w):
    path = f"{ROOT}/data.bin"
    w.workspace.upload(path, io.BytesIO(BINARY), format=ImportFormat.AUTO)
    assert w.workspace.download(path).read() == BINARY
    status = w.workspace.get_status(path)
    assert status.object_type == ObjectType.FILE and status.size == len(BINARY) and status.language is None
    # plain bytes too (not only a file object), and the JSON export of the same object
    w.workspace.upload(f"{ROOT}/empty.bin", b"", format=ImportFormat.AUTO)
    assert w.workspace.download(f"{ROOT}/empty.bin").read() == b""
    assert base64.b64decode(w.workspace.export(path).content) == BINARY


def test_upload_over_an_existing_object(w):
    path = f"{ROOT}/over.txt"
    w.workspace.upload(path, io.BytesIO(b"first"), format=ImportFormat.AUTO)
    with pytest.raises(ResourceAlreadyExists, match="overwrite"):
        w.workspace.upload(path, io.BytesIO(b"second"), format=ImportFormat.AUTO)
    assert w.workspace.download(path).read() == b"first"
    w.workspace.upload(path, io.BytesIO(b"second"), format=ImportFormat.AUTO, overwrite=True)
    assert w.workspace.download(path).read() == b"second"


def test_notebook_upload_get_status_export_and_download(w):
    path = f"{ROOT}/nb.py"
    w.workspace.upload(
        path, io.BytesIO(NOTEBOOK), format=ImportFormat.SOURCE, language=Language.PYTHON, overwrite=True
    )
    status = w.workspace.get_status(path)
    assert status.object_type == ObjectType.NOTEBOOK and status.language == Language.PYTHON
    assert base64.b64decode(w.workspace.export(path, format=ExportFormat.SOURCE).content) == NOTEBOOK
    assert w.workspace.download(path, format=ExportFormat.SOURCE).read() == NOTEBOOK
    listed = {o.path: o.object_type for o in w.workspace.list(ROOT)}
    assert listed[path] == ObjectType.NOTEBOOK


def test_upload_without_format_and_with_auto(w):
    # no format: the SDK takes the language from the .sql suffix, the server imports SOURCE
    w.workspace.upload(f"{ROOT}/q.sql", io.BytesIO(b"SELECT 1"))
    status = w.workspace.get_status(f"{ROOT}/q.sql")
    assert status.object_type == ObjectType.NOTEBOOK and status.language == Language.SQL
    # AUTO: a .py with the notebook header is a notebook (suffix dropped), without it a file
    w.workspace.upload(f"{ROOT}/auto_nb.py", io.BytesIO(NOTEBOOK), format=ImportFormat.AUTO)
    status = w.workspace.get_status(f"{ROOT}/auto_nb")
    assert status.object_type == ObjectType.NOTEBOOK and status.language == Language.PYTHON
    assert w.workspace.download(f"{ROOT}/auto_nb").read() == NOTEBOOK
    w.workspace.upload(f"{ROOT}/helper.py", io.BytesIO(b"X = 1\n"), format=ImportFormat.AUTO)
    assert w.workspace.get_status(f"{ROOT}/helper.py").object_type == ObjectType.FILE
    # no format and no language to infer: SOURCE needs one, and the SDK hints at AUTO
    with pytest.raises(DatabricksError, match="ImportFormat.AUTO") as err:
        w.workspace.upload(f"{ROOT}/notes.txt", io.BytesIO(b"text"))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and "language" in str(err.value)


def test_download_errors(w):
    with pytest.raises(NotFound):
        w.workspace.download(f"{ROOT}/missing.bin")
    with pytest.raises(DatabricksError, match="is a directory"):
        w.workspace.download(ROOT)


def test_multipart_by_hand_with_a_preamble(ws, w):
    body = (
        b"a preamble to ignore\r\n--XyZ\r\n"
        b'Content-Disposition: form-data; name="path"\r\n\r\n'
        + f"{ROOT}/hand.bin".encode()
        + b"\r\n--XyZ\r\n"
        b'Content-Disposition: form-data; name="format"\r\n\r\nAUTO\r\n--XyZ  \r\n'
        b'Content-Disposition: form-data; name="content"; filename="hand.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + BINARY + b"\r\n--XyZ--\r\nan epilogue\r\n"
    )
    response = post_import(ws, body, 'multipart/form-data; boundary="XyZ"')
    assert response.status_code == 200, response.text
    assert w.workspace.download(f"{ROOT}/hand.bin").read() == BINARY
    exported = requests.get(
        f"{ws.host}/api/2.0/workspace/export",
        params={"path": f"{ROOT}/hand.bin", "direct_download": "true"},
        headers={"Authorization": f"Bearer {ws.token}"},
        timeout=30,
    )
    assert exported.headers["Content-Type"] == "application/octet-stream" and exported.content == BINARY


def field(name: str, value: bytes) -> bytes:
    """One text part of a multipart body with boundary `b`."""
    return b'--b\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (field("path", b"/x") + b"--b--\r\n", "multipart/form-data", "boundary"),
        (b"no boundary anywhere", MULTIPART, "no part starting with its boundary"),
        (field("path", b"/x"), MULTIPART, "closing boundary"),
        (b'--b\r\nContent-Disposition: form-data; name="path"/x\r\n--b--\r\n', MULTIPART, "empty line"),
        (b"--b\r\nContent-Type: text/plain\r\n\r\n/x\r\n--b--\r\n", MULTIPART, "Content-Disposition"),
        (field("path", b"\xff\xfe") + b"--b--\r\n", MULTIPART, "UTF-8"),
    ],
    ids=["no-boundary-param", "boundary-absent", "unclosed", "no-blank-line", "no-disposition", "not-utf8"],
)
def test_malformed_multipart_is_a_clear_400(ws, body, content_type, message):
    response = post_import(ws, body, content_type)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error_code"] == "INVALID_PARAMETER_VALUE" and message in error["message"], error
    assert "multipart/form-data" in error["message"]


def test_multipart_content_as_a_text_field_is_refused_with_a_hint(ws):
    body = field("path", f"{ROOT}/text.py".encode()) + field("content", b"print(1)") + b"--b--\r\n"
    response = post_import(ws, body, MULTIPART)
    assert response.status_code == 400 and "file part" in response.json()["message"]


def test_json_import_and_bad_language(ws, w):
    content = base64.b64encode(NOTEBOOK).decode()
    w.workspace.import_(f"{ROOT}/json.py", content=content, format=ImportFormat.SOURCE, language=Language.SQL)
    assert w.workspace.download(f"{ROOT}/json.py").read() == NOTEBOOK
    assert w.workspace.get_status(f"{ROOT}/json.py").language == Language.SQL
    body = field("path", b"/x.cob") + field("language", b"COBOL") + b"--b--\r\n"
    response = post_import(ws, body, MULTIPART)
    assert response.status_code == 400 and "language 'COBOL' is not valid" in response.json()["message"]
