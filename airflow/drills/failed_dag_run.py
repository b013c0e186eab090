"""Drill: the store database is down during the nightly ingestion; the Airflow DAG run fails for good.

Runs in the Airflow venv (`.venv-airflow`) against a local workspace that is already serving
(`python -m retail_lakehouse.local`, a process of the main venv):

1. the OLTP source (`LAKEHOUSE_HOME/sources/store_oltp.sqlite`) is moved away;
2. the workspace's `retail_ingestion` job is reset (Jobs API) so each of its tasks is tried once:
   the drill shows Airflow's retries, not the job's own (as the `failed_job` drill does);
3. the DAG `retail_ingestion` runs with `dag.test()` (`airflow dags test`): every try of
   `run_retail_ingestion` launches a Databricks run that fails, Airflow retries, then gives up;
4. the job's settings and the source are put back, whatever happened.

`RETAIL_AIRFLOW_RETRIES` (default here 1: two tries) keeps the drill short; the DAGs' own default
is 3. `python airflow/drills/failed_dag_run.py --lakehouse-home H [--resetdb] [--out result.json]`
runs it from the command line (the runbook site's build does); the Airflow tests import `run`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow" / "dags"
DAG_ID = "retail_ingestion"
TASK_ID = f"run_{DAG_ID}"
DRILL_RETRIES = 1
# Seconds instead of minutes: retry delays 1 s, 2 s, ... and a poll of the Databricks run every second.
_DRILL_KNOBS = {
    "RETAIL_AIRFLOW_RETRY_DELAY_SECONDS": "1",
    "RETAIL_AIRFLOW_MAX_RETRY_DELAY_SECONDS": "30",
    "RETAIL_AIRFLOW_POLL_SECONDS": "1",
    "RETAIL_AIRFLOW_API_RETRY_LIMIT": "2",
}


def conn_json(port: int, token: str) -> str:
    """The Databricks connection of the local workspace (the provider keeps only `host`'s name)."""
    return json.dumps({"conn_type": "databricks", "host": "127.0.0.1", "port": port, "schema": "http", "password": token})


def workspace_of(lakehouse_home: Path) -> tuple[str, int, str]:
    """(host, port, token) of the local workspace serving `lakehouse_home`."""
    info = json.loads((lakehouse_home / "workspace" / "server.json").read_text())
    token = (lakehouse_home / "workspace" / ".token").read_text().strip()
    return info["host"], int(info["port"]), token


def _jobs_api(host: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - the local workspace on 127.0.0.1
        f"{host}/api/2.2/jobs/{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        raw = resp.read()
    return json.loads(raw) if raw else {}


@contextlib.contextmanager
def tasks_tried_once(host: str, token: str, job_name: str = DAG_ID) -> Iterator[int]:
    """The job with `max_retries: 0` on every task while the block runs (Jobs API reset, then back)."""
    jobs = _jobs_api(host, token, "GET", "list?" + urllib.parse.urlencode({"name": job_name})).get("jobs") or []
    if not jobs:
        raise RuntimeError(f"the local workspace has no job {job_name!r}")
    job_id = int(jobs[0]["job_id"])
    original = _jobs_api(host, token, "GET", f"get?job_id={job_id}")["settings"]
    once = json.loads(json.dumps(original))
    for task in once.get("tasks") or []:
        task["max_retries"] = 0
    _jobs_api(host, token, "POST", "reset", {"job_id": job_id, "new_settings": once})
    try:
        yield job_id
    finally:
        _jobs_api(host, token, "POST", "reset", {"job_id": job_id, "new_settings": original})


@contextlib.contextmanager
def source_down(lakehouse_home: Path) -> Iterator[Path]:
    """The store database moved away while the block runs."""
    src = lakehouse_home / "sources" / "store_oltp.sqlite"
    aside = src.with_name(src.name + ".moved-by-drill")
    src.replace(aside)
    try:
        yield src
    finally:
        aside.replace(src)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_dag(dag_id: str = DAG_ID, *, retries: int | None = None) -> Any:
    """The DAG as the DAG processor parses it (with `retries` for its tasks when given)."""
    from airflow.models.dagbag import DagBag

    knobs = {"RETAIL_AIRFLOW_RETRIES": str(retries)} if retries is not None else {}
    with _env(**knobs):
        bag = DagBag(str(DAGS), include_examples=False)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def local_receiver_conns(lakehouse_home: Path) -> dict[str, str]:
    """The failure notifiers' connections pointed at the lakehouse's local alert receivers, when they
    listen (`lakehouse alerts listen` writes `<home>/alerts/receivers.json`); else none."""
    try:
        info = json.loads((lakehouse_home / "alerts" / "receivers.json").read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return {}
    host = info.get("host", "127.0.0.1")
    slack = {"conn_type": "slackwebhook", "password": f"http://{host}:{info['http_port']}/slack/local-drill"}
    smtp = {"conn_type": "smtp", "host": host, "port": info["smtp_port"],
            "extra": {"disable_tls": True, "disable_ssl": True}}
    return {"AIRFLOW_CONN_SLACK_RETAIL_ALERTS": json.dumps(slack), "AIRFLOW_CONN_SMTP_RETAIL_ALERTS": json.dumps(smtp)}


def run(lakehouse_home: Path, *, retries: int = DRILL_RETRIES) -> dict[str, Any]:
    """Run the drill; return the failed DAG run: dag_id, run_id, state, task_id, tries, seconds, and
    whether its failure notifications went to the local alert receivers (when they listen)."""
    host, port, token = workspace_of(lakehouse_home)
    os.environ["AIRFLOW_CONN_DATABRICKS_LOCAL"] = conn_json(port, token)
    receivers = local_receiver_conns(lakehouse_home)
    os.environ.update(receivers)
    dag = load_dag(retries=retries)
    started = time.monotonic()
    with tasks_tried_once(host, token), source_down(lakehouse_home):
        dr = dag.test()
    return {
        "dag_id": dag.dag_id,
        "run_id": dr.run_id,
        "state": str(dr.state),
        "task_id": TASK_ID,
        "tries": _try_number(dag.dag_id, dr.run_id, TASK_ID),
        "seconds": round(time.monotonic() - started, 1),
        "notified_local_receivers": bool(receivers),
    }


def _try_number(dag_id: str, run_id: str, task_id: str) -> int:
    """How many times the task was tried in the DAG run (from Airflow's metadata DB)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        )
        return int(ti.try_number) if ti is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lakehouse-home", required=True, type=Path)
    parser.add_argument("--resetdb", action="store_true", help="create Airflow's metadata DB first (AIRFLOW_HOME)")
    parser.add_argument("--retries", type=int, default=DRILL_RETRIES)
    parser.add_argument("--out", type=Path, help="write the result as JSON here (else print it)")
    args = parser.parse_args(argv)
    os.environ["LAKEHOUSE_HOME"] = str(args.lakehouse_home)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    for knob, value in _DRILL_KNOBS.items():  # before the DAGs are parsed
        os.environ.setdefault(knob, value)
    if args.resetdb:
        from airflow.utils import db

        db.resetdb(skip_init=False)
        # an api-server may start on the DB from now on (the runbook site's build waits for this)
        (Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "db-ready").touch()
    server = args.lakehouse_home / "workspace" / "server.json"
    deadline = time.monotonic() + 180
    while not server.is_file():  # the workspace may still be starting
        if time.monotonic() > deadline:
            raise SystemExit(f"no local workspace serves {args.lakehouse_home}: {server} is missing")
        time.sleep(0.3)
    result = run(args.lakehouse_home, retries=args.retries)
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    print(text, flush=True)
    return 0 if result["state"] == "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
