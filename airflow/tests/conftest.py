"""Fixtures of the Airflow tests: run in `.venv-airflow` (`make airflow-test`), never by the main pytest.

Airflow reads its configuration when first imported, so the environment is set here, before any
test module imports it: a throw-away AIRFLOW_HOME (SQLite metadata DB), no examples, the repo's
DAG folder, and tiny retry delays / polling so the drills take seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow" / "dags"
MAIN_PYTHON = Path(os.environ.get("LAKEHOUSE_MAIN_PYTHON") or REPO / ".venv" / "bin" / "python")

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("LAKEHOUSE_ENV", "local")
os.environ["RETAIL_AIRFLOW_RETRY_DELAY_SECONDS"] = "1"  # tries 2, 3, 4 wait [1,2), [2,4), [4,8) s
os.environ["RETAIL_AIRFLOW_MAX_RETRY_DELAY_SECONDS"] = "30"
os.environ["RETAIL_AIRFLOW_POLL_SECONDS"] = "2"
os.environ["RETAIL_AIRFLOW_API_RETRY_LIMIT"] = "2"
DRILLS = REPO / "airflow" / "drills"
for folder in (DAGS, DRILLS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conn_json(port: int, token: str) -> str:
    """The provider keeps only the host name of `host`: scheme and port go in `schema` and `port`."""
    return json.dumps(
        {"conn_type": "databricks", "host": "127.0.0.1", "port": port, "schema": "http", "password": token}
    )


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata DB in AIRFLOW_HOME (SQLite)."""
    from airflow.utils import db

    db.resetdb(skip_init=False)
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def lakehouse_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("lakehouse")
    os.environ["LAKEHOUSE_HOME"] = str(home)
    if not MAIN_PYTHON.exists():
        pytest.fail(f"the main venv's python {MAIN_PYTHON} is missing: run `make setup` first")
    lakehouse = MAIN_PYTHON.parent / "lakehouse"
    subprocess.run(
        [str(lakehouse), "generate", "--scale-factor", "0.05", "--days", "3"],
        check=True,
        env={**os.environ, "LAKEHOUSE_HOME": str(home)},
        cwd=REPO,
        capture_output=True,
    )
    return home


@pytest.fixture(scope="session")
def workspace(lakehouse_home):
    """The local workspace as a separate process of the MAIN venv; yields (host, port, token)."""
    log = open(lakehouse_home / "workspace.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(  # noqa: S603
        [str(MAIN_PYTHON), "-m", "retail_lakehouse.local", "--port", "0"],
        env={**os.environ, "LAKEHOUSE_HOME": str(lakehouse_home)},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    info_file = lakehouse_home / "workspace" / "server.json"
    deadline = time.monotonic() + 120
    info = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"local workspace exited with {proc.returncode}: {(lakehouse_home / 'workspace.log').read_text()}")
        if info_file.is_file():
            info = json.loads(info_file.read_text())
            break
        time.sleep(0.2)
    if info is None:
        proc.kill()
        pytest.fail("local workspace did not start within 120 s")
    token = (lakehouse_home / "workspace" / ".token").read_text().strip()
    os.environ["AIRFLOW_CONN_DATABRICKS_LOCAL"] = conn_json(info["port"], token)
    try:
        yield info["host"], info["port"], token
    finally:
        _stop(proc, log)


def _stop(proc: subprocess.Popen, log) -> None:
    """Stop a server started in its own process group (SIGTERM, then SIGKILL after 30 s)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def api_get(host: str, token: str, path: str) -> dict:
    req = urllib.request.Request(f"{host}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - 127.0.0.1
        return json.loads(resp.read())


@pytest.fixture
def sources_moved(lakehouse_home):
    """Move the OLTP source away for a drill; put it back after."""
    src = lakehouse_home / "sources" / "store_oltp.sqlite"
    aside = lakehouse_home / "store_oltp.sqlite.aside"
    shutil.move(src, aside)
    try:
        yield src
    finally:
        if aside.exists():
            shutil.move(aside, src)


@pytest.fixture(scope="session")
def api_server(airflow_db, tmp_path_factory):
    """A real Airflow api-server on the tests' metadata DB (simple auth manager, one user `ops`)."""
    home = os.environ["AIRFLOW_HOME"]
    pw_file = tmp_path_factory.mktemp("auth") / "passwords.json"
    pw_file.write_text(json.dumps({"ops": "ops-secret"}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-secret",
    }
    log = open(os.path.join(home, "api-server.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "airflow", "api-server", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"api-server exited: {Path(home, 'api-server.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2)  # noqa: S310
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("api-server did not answer within 120 s")
    try:
        yield url
    finally:
        _stop(proc, log)
