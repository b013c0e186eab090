"""The runbook site's orchestration-failure example: a real Airflow DAG run, failed, then triaged.

During `lakehouse book`, `start(home)` launches (in a child process, alongside the drills) what an
on-call engineer would meet: a lakehouse of its own under `<home>/book-airflow/` (sources only),
its local workspace, Airflow 3 from `.venv-airflow` (built with `make airflow-venv` when missing)
running the drill `airflow/drills/failed_dag_run.py` (the store database away, the DAG
`retail_ingestion` tried twice, each try's Databricks run failing), an Airflow api-server on that
DAG run, and `job_failure_triage.ipynb` executed by papermill with `-p dag_id -p dag_run_id`.
The executed notebook becomes `book/_generated/runs/job_failure_triage--airflow_dag_run.ipynb`
(a sub-page of the failure handling chapter) and `book/_generated/procedures/airflow_dag_run.md`
the paragraph the chapter's orchestration section includes.

Like the drills' runs it is cached: its key is the hash of the library, the notebook, the DAGs,
the drill and the Airflow pins; an unchanged key reuses the run without starting anything.
`python -m retail_lakehouse.site._book_airflow --home DIR` runs it by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from retail_lakehouse.core.config import PROJECT_ROOT
from retail_lakehouse.core.errors import BookBuildError
from retail_lakehouse.site._book_runs import (
    GENERATED,
    OPS_DIR,
    RUNS_DIR,
    RunRecord,
    library_hash,
    load_record,
)

AIRFLOW_VENV = PROJECT_ROOT / ".venv-airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
DRILL_SCRIPT = PROJECT_ROOT / "airflow" / "drills" / "failed_dag_run.py"
NOTEBOOK = "job_failure_triage"
DRILL = "airflow_dag_run"
STEM = f"{NOTEBOOK}--{DRILL}"
INCLUDE = GENERATED / "procedures" / f"{DRILL}.md"
SUMMARY = "store database down during the nightly ingestion: the Airflow DAG run retail_ingestion fails for good"
_SERVER_TIMEOUT = 180


def run_key(lib_hash: str | None = None) -> str:
    """Cache key: library, notebook, DAGs, drill and Airflow pins."""
    airflow_dir = PROJECT_ROOT / "airflow"
    files = [OPS_DIR / f"{NOTEBOOK}.ipynb", airflow_dir / "requirements.txt", DRILL_SCRIPT]
    files += sorted((airflow_dir / "dags").glob("*.py"))
    digest = hashlib.sha256((lib_hash or library_hash()).encode())
    for path in files:
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest() if path.exists() else b"-")
    return digest.hexdigest()


def current_record() -> RunRecord | None:
    """The executed example kept from an earlier build, if its key is still current."""
    record = load_record(STEM)
    return record if record is not None and record.key == run_key() else None


def write_include(record: RunRecord | None, problem: str = "") -> None:
    """The paragraph the orchestration section includes: the executed example, or why there is none."""
    if record is not None:
        text = (
            f"**Executed example**: {{doc}}`a failed Airflow DAG run, triaged </book/_generated/runs/{STEM}>` "
            f"({record.executed_at}). {record.description}\n"
        )
    else:
        text = (
            "```{note}\nThe Airflow example did not run in this build"
            + (f": {problem.strip().splitlines()[-1][:300]}" if problem.strip() else "")
            + ". See the `[book] airflow` lines of the build log.\n```\n"
        )
    INCLUDE.parent.mkdir(parents=True, exist_ok=True)
    if not INCLUDE.exists() or INCLUDE.read_text() != text:
        INCLUDE.write_text(text)


@dataclass
class Pending:
    """The example being made in a child process (or already there)."""

    proc: subprocess.Popen[bytes] | None
    key: str
    started: float

    def wait(self) -> list[str]:
        """Wait for the child; write the chapter's paragraph; return the failures (empty: fine)."""
        if self.proc is not None:
            self.proc.wait()
        record = load_record(STEM)
        if record is None or record.key != self.key:
            write_include(None, "the example run failed")
            return ["job_failure_triage on a failed Airflow DAG run"]
        write_include(record)
        if self.proc is not None:
            print(f"[book] airflow example: ready after {time.perf_counter() - self.started:.0f}s", flush=True)
        return []


def start(home: Path, *, clean: bool = False) -> Pending:
    """Start making the example unless a current one exists; `Pending.wait()` collects it."""
    key = run_key()
    started = time.perf_counter()
    if not clean and current_record() is not None:
        print("[book] airflow example: unchanged, reused", flush=True)
        return Pending(None, key, started)
    for suffix in (".ipynb", ".json"):  # an outdated example must not outlive a failed re-run
        (RUNS_DIR / f"{STEM}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SPARK_REMOTE", None)
    cmd = [sys.executable, "-m", "retail_lakehouse.site._book_airflow", "--home", str(home / "book-airflow"), "--key", key]
    print("[book] airflow example: running (Airflow 3 api-server + a failing DAG run) ...", flush=True)
    return Pending(subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT), key, started)  # noqa: S603


def keep() -> set[str]:
    """Run stems the build must not prune."""
    return {STEM}


# ---------------------------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------------------------


class ExampleFailed(BookBuildError):
    """A step of the example failed; the message says which."""


def _log(message: str) -> None:
    print(f"[book] airflow: {message}", flush=True)


def ensure_airflow_venv() -> Path:
    """`.venv-airflow` with Airflow and its Databricks provider (`make airflow-venv` when missing or stale)."""
    stamp, pins = AIRFLOW_VENV / ".installed", PROJECT_ROOT / "airflow" / "requirements.txt"
    if AIRFLOW_PYTHON.exists() and stamp.exists() and stamp.stat().st_mtime >= pins.stat().st_mtime:
        return AIRFLOW_PYTHON
    make = shutil.which("make")
    if make is None:
        raise ExampleFailed(f"{AIRFLOW_VENV} is missing and `make` is not installed: run `make airflow-venv`")
    _log(f"building {AIRFLOW_VENV} (make airflow-venv) ...")
    proc = subprocess.run([make, "-C", str(PROJECT_ROOT), "airflow-venv"], check=False)  # noqa: S603
    if proc.returncode != 0 or not AIRFLOW_PYTHON.exists():
        raise ExampleFailed("`make airflow-venv` failed: see its output above")
    return AIRFLOW_PYTHON


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ExampleFailed(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        if ready():
            return
        time.sleep(0.3)
    raise ExampleFailed(f"{what} did not start within {_SERVER_TIMEOUT}s; see {log}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2):  # noqa: S310 - 127.0.0.1
            return True
    except OSError:
        return False


def make_example(home: Path, key: str) -> RunRecord:
    """Build the example in `home` (wiped first) and write it under `book/_generated/runs/`."""
    import nbformat
    import papermill

    from retail_lakehouse.sandbox.generate import generate
    from retail_lakehouse.site._book_runs import prepare_for_site

    started = time.perf_counter()
    airflow_python = ensure_airflow_venv()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    airflow_home = home / "airflow_home"
    airflow_home.mkdir()
    os.environ.update(LAKEHOUSE_HOME=str(home), LAKEHOUSE_ENV="local", AIRFLOW_HOME=str(airflow_home))
    os.environ.pop("SPARK_REMOTE", None)
    generate(home, scale_factor=0.05, days=1)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(  # noqa: S603
            cmd, env=env or dict(os.environ), cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        procs.append(proc)
        return proc

    airflow_env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    try:
        # The workspace (this venv) and Airflow's metadata DB + the drill (Airflow's venv) start together.
        workspace = spawn([sys.executable, "-m", "retail_lakehouse.local", "--port", "0"],
                          home / "workspace.log")
        result_file = home / "drill.json"
        drill = spawn([str(airflow_python), str(DRILL_SCRIPT), "--lakehouse-home", str(home), "--resetdb",
                       "--out", str(result_file)], home / "drill.log", airflow_env)
        _wait_for("the local workspace", (home / "workspace" / "server.json").is_file, workspace, home / "workspace.log")
        _log("workspace up; Airflow: metadata DB, then `dag.test()` of retail_ingestion with the store database away")
        # The api-server once the DB exists (the drill writes it first), while the DAG run goes on.
        _wait_for("the drill's metadata DB", (airflow_home / "db-ready").is_file, drill, home / "drill.log")
        password, port = secrets.token_urlsafe(16), _free_port()
        (airflow_home / "passwords.json").write_text(json.dumps({"ops": password}))
        api_env = {
            **airflow_env,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        }
        url = f"http://127.0.0.1:{port}"
        api = spawn([str(airflow_python), "-m", "airflow", "api-server", "--port", str(port), "--host", "127.0.0.1"],
                    home / "api-server.log", api_env)
        if drill.wait(timeout=900) != 0 or not result_file.is_file():
            raise ExampleFailed(f"the drill did not fail the DAG run as planned: {(home / 'drill.log').read_text()[-3000:]}")
        run = json.loads(result_file.read_text())
        _log(f"DAG run {run['dag_id']}/{run['run_id']} {run['state']} after {run['seconds']}s; triage notebook ...")
        _wait_for("the Airflow api-server", lambda: _healthy(url), api, home / "api-server.log")
        os.environ.update(AIRFLOW_API_URL=url, AIRFLOW_API_USERNAME="ops", AIRFLOW_API_PASSWORD=password)
        parameters = {"env": "local", "dag_id": run["dag_id"], "dag_run_id": run["run_id"]}
        output = RUNS_DIR / f"{STEM}.ipynb"
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            papermill.execute_notebook(
                str(OPS_DIR / f"{NOTEBOOK}.ipynb"), str(output), parameters=parameters, kernel_name="lakehouse-warm",
                resources={"metadata": {"path": str(OPS_DIR)}}, progress_bar=False, log_output=False,
                request_save_on_cell_execute=False, execution_timeout=600,
            )
        except Exception as exc:
            output.with_suffix(".json").unlink(missing_ok=True)
            if output.exists():
                output.replace(output.with_suffix(".failed.ipynb"))
            raise ExampleFailed(f"{NOTEBOOK} failed on the DAG run: {type(exc).__name__}: {str(exc)[-1500:]}") from exc
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for var in ("AIRFLOW_API_URL", "AIRFLOW_API_USERNAME", "AIRFLOW_API_PASSWORD"):
            os.environ.pop(var, None)
    record = RunRecord(
        drill=DRILL,
        notebook=NOTEBOOK,
        key=key,
        description=(
            f"Airflow 3 ran the DAG `{run['dag_id']}` while the store database was away; each of its "
            f"{run['tries']} tries launched a Databricks run that failed, and Airflow gave up. The notebook "
            "read that DAG run from Airflow's REST API, then the failed task's Databricks run from the workspace."
        ),
        summary=SUMMARY,
        parameters=parameters,
        executed_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=round(time.perf_counter() - started, 1),
    )
    nb = prepare_for_site(nbformat.read(output, as_version=4), record)
    from retail_lakehouse.site._book_readable import summary_box

    nb.cells[0] = nbformat.v4.new_markdown_cell(_intro(record, run, summary_box(nb)))
    nbformat.write(nb, output)
    output.with_suffix(".json").write_text(json.dumps(asdict(record), indent=2, default=str) + "\n")
    return record


def _intro(record: RunRecord, run: dict[str, object], box: str | None = None) -> str:
    return (
        f"# Example run: `{NOTEBOOK}` on a failed Airflow DAG run\n\n"
        f"{box or ''}\n"
        "```{admonition} How this run was made\n:class: note\n"
        f"During the site build ({record.executed_at}, {record.seconds:.0f} s in all), Airflow 3 (the pinned "
        f"`.venv-airflow`) ran the DAG `{run['dag_id']}` with `dag.test()` (what `airflow dags test` does) "
        "against a local workspace while the store database was moved away "
        "(`airflow/drills/failed_dag_run.py`). Each try of `run_retail_ingestion` launched a Databricks run "
        "of the job `retail_ingestion`, which failed; Airflow gave up after the last try. An Airflow "
        "api-server then served that DAG run and papermill executed this notebook with "
        f"`-p dag_id {run['dag_id']} -p dag_run_id {run['run_id']}`, its credentials in "
        "`AIRFLOW_API_URL` / `AIRFLOW_API_USERNAME` / `AIRFLOW_API_PASSWORD`. Every output below is that run's.\n\n"
        "To keep the build short the drill lowers the DAG's retries to 1 (`RETAIL_AIRFLOW_RETRIES`), its "
        "delays to seconds, and tries each Databricks task once; production DAGs retry 3 times with "
        "5-minute exponential backoff, and each Databricks task retries twice first.\n\n"
        "The same drill and notebook run in `make airflow-test` "
        "(`airflow/tests/test_orchestration_triage.py`); by hand, on your Airflow:\n\n"
        "    export AIRFLOW_API_URL=https://airflow.example.com AIRFLOW_API_USERNAME=... AIRFLOW_API_PASSWORD=...\n"
        "    papermill ops_notebooks/job_failure_triage.ipynb out.ipynb -p env prod "
        "-p dag_id retail_ingestion -p dag_run_id '<Run Id>'\n"
        "```\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, type=Path, help="the example's own lakehouse (wiped first)")
    parser.add_argument("--key", default=None, help="cache key to record (default: the current one)")
    args = parser.parse_args(argv)
    try:
        record = make_example(args.home.resolve(), args.key or run_key())
    except ExampleFailed as exc:
        print(f"[book] airflow example FAILED: {exc}", flush=True)
        return 1
    _log(f"done in {record.seconds:.0f}s: {RUNS_DIR / STEM}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
