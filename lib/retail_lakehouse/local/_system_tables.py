"""System tables of the local workspace, derived from the local run history.

`system.billing.usage`, `system.billing.list_prices`, `system.lakeflow.job_run_timeline` and
`system.compute.clusters` are materialized as Delta tables in the local monitoring schema
(`<catalog>.<env>_monitoring.system_billing_usage`, ...) and refreshed from the runs' run.json
files before a statement that names them; the statement's `system.x.y` names are then rewritten
to those tables. (The embedded engine has one catalog, named like Unity's, so a `system` catalog
is not visible to it; rewriting keeps the SQL text identical to what runs on Databricks.)

Usage is computed with the DBU model of `dbu_model.yaml`: one usage record per job cluster and run
(Databricks splits records by hour; the sums are the same). Columns are Databricks' (a subset of
the nested fields of `usage_metadata`, `identity_metadata` and `product_features`).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from retail_lakehouse.engine import sql_string
from retail_lakehouse.local import _runs
from retail_lakehouse.local._common import ACCOUNT_ID, LOCAL_USER, WORKSPACE_ID

if TYPE_CHECKING:
    from retail_lakehouse.jobs.job_runs import JobRun

MODEL_PATH = Path(__file__).with_name("dbu_model.yaml")

TABLES = {
    "system.billing.usage": "system_billing_usage",
    "system.billing.list_prices": "system_billing_list_prices",
    "system.lakeflow.job_run_timeline": "system_lakeflow_job_run_timeline",
    "system.compute.clusters": "system_compute_clusters",
}
_NAME = re.compile(
    r"(?<![\w.`])`?system`?\s*\.\s*`?(billing|lakeflow|compute)`?\s*\.\s*`?(\w+)`?(?![\w`])", re.IGNORECASE
)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

USAGE_SCHEMA = (
    "record_id string, account_id string, workspace_id string, sku_name string, cloud string, "
    "usage_start_time timestamp, usage_end_time timestamp, usage_date date, custom_tags map<string,string>, "
    "usage_unit string, usage_quantity decimal(38,18), "
    "usage_metadata struct<cluster_id:string,job_id:string,warehouse_id:string,instance_pool_id:string,"
    "node_type:string,job_run_id:string,notebook_id:string,dlt_pipeline_id:string,endpoint_name:string,"
    "endpoint_id:string,run_name:string,job_name:string,notebook_path:string>, "
    "identity_metadata struct<run_as:string,owned_by:string>, record_type string, ingestion_date date, "
    "billing_origin_product string, "
    "product_features struct<jobs_tier:string,sql_tier:string,is_serverless:boolean,is_photon:boolean>, "
    "usage_type string"
)
PRICES_SCHEMA = (
    "price_start_time timestamp, price_end_time timestamp, account_id string, sku_name string, cloud string, "
    "currency_code string, usage_unit string, pricing struct<default:decimal(38,18)>"
)
TIMELINE_SCHEMA = (
    "account_id string, workspace_id string, job_id string, run_id string, period_start_time timestamp, "
    "period_end_time timestamp, trigger_type string, run_type string, run_name string, "
    "compute_ids array<string>, result_state string, termination_code string, job_parameters map<string,string>"
)
CLUSTERS_SCHEMA = (
    "account_id string, workspace_id string, cluster_id string, cluster_name string, owned_by string, "
    "create_time timestamp, delete_time timestamp, driver_node_type string, worker_node_type string, "
    "worker_count bigint, min_autoscale_workers bigint, max_autoscale_workers bigint, "
    "auto_termination_minutes bigint, enable_elastic_disk boolean, tags map<string,string>, "
    "cluster_source string, init_scripts array<string>, driver_instance_pool_id string, "
    "worker_instance_pool_id string, dbr_version string, change_time timestamp, change_date date, "
    "data_security_mode string, policy_id string"
)

_lock = threading.Lock()
_refreshed: dict[str, Any] = {}


# ----------------------------------------------------------------------------- statements


def mentions(statement: str) -> bool:
    return bool(_NAME.search(_outside_strings(statement)))


def rewrite(statement: str, *, env: str | None = None) -> str:
    """`system.billing.usage` and the other system tables -> their local tables (strings untouched)."""
    from retail_lakehouse.core.config import load_settings

    settings = load_settings(env)
    schema = f"{settings.catalog}.{settings.schema('monitoring')}"

    def one(m: re.Match[str]) -> str:
        name = f"system.{m.group(1).lower()}.{m.group(2).lower()}"
        return f"{schema}.{TABLES[name]}" if name in TABLES else m.group(0)

    out, pos = [], 0
    for s in _STRING.finditer(statement):
        out.append(_NAME.sub(one, statement[pos : s.start()]))
        out.append(s.group(0))
        pos = s.end()
    out.append(_NAME.sub(one, statement[pos:]))
    return "".join(out)


def prepare(statement: str, *, env: str | None = None) -> str:
    """The statement to run locally: system tables refreshed and their names rewritten."""
    if not mentions(statement):
        return statement
    refresh(env=env)
    return rewrite(statement, env=env)


def _outside_strings(statement: str) -> str:
    return _STRING.sub("''", statement)


# ----------------------------------------------------------------------------- model and rows


@lru_cache(maxsize=4)
def _model(path: str, mtime: float) -> dict[str, Any]:  # noqa: ARG001 - mtime keys the cache
    return yaml.safe_load(Path(path).read_text())


def load_model(path: Path | None = None) -> dict[str, Any]:
    """The DBU model (`dbu_model.yaml`)."""
    path = path or MODEL_PATH
    return _model(str(path), path.stat().st_mtime)


def node_rate(model: dict[str, Any], node_type: str | None) -> tuple[str, float]:
    """(cloud, DBU per hour) of a node type."""
    node = (model.get("node_types") or {}).get(node_type or "") or model["default_node"]
    return str(node["cloud"]), float(node["dbu_per_hour"])


def usage_rows(runs: dict[str, JobRun], model: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One usage record per job cluster and run, and one per run for its serverless tasks."""
    tier = model.get("tier", "PREMIUM")
    rows = []
    for use in _runs.cluster_uses(runs):
        if use.running:
            continue
        cloud, worker_rate = node_rate(model, use.node_type_id)
        _, driver_rate = node_rate(model, use.driver_node_type_id)
        dbus = (use.workers * worker_rate + driver_rate) * use.hours
        rows.append(
            _usage(
                record=f"{use.cluster_id}",
                sku=f"{tier}_JOBS_COMPUTE",
                cloud=cloud,
                start=use.start,
                end=use.end,
                quantity=dbus,
                run_local_id=use.local_run_id,
                job_key=use.job_key,
                job_name=use.job_name,
                cluster_id=use.cluster_id,
                node_type=use.node_type_id,
                serverless=False,
                tags={"ResourceClass": "JobCluster", "ClusterName": _runs.cluster_name(use)},
                tier=tier,
            )
        )
    serverless = model.get("serverless_jobs") or {"cloud": "AWS", "dbu_per_hour": 1.0}
    for local_id, run in runs.items():
        tasks = [t for t in run.tasks if t.attempt > 0 and t.compute.get("serverless")]
        if not tasks or run.state == "RUNNING":
            continue
        hours = sum(t.duration for t in tasks) / 3600
        rows.append(
            _usage(
                record=f"serverless-{local_id}",
                sku=f"{tier}_JOBS_SERVERLESS_COMPUTE",
                cloud=str(serverless["cloud"]),
                start=min(t.start for t in tasks),
                end=max(t.end for t in tasks),
                quantity=hours * float(serverless["dbu_per_hour"]),
                run_local_id=local_id,
                job_key=run.job,
                job_name=run.job_name,
                cluster_id=None,
                node_type=None,
                serverless=True,
                tags={},
                tier=tier,
            )
        )
    return rows


def _usage(
    *,
    record: str,
    sku: str,
    cloud: str,
    start: datetime,
    end: datetime,
    quantity: float,
    run_local_id: str,
    job_key: str,
    job_name: str,
    cluster_id: str | None,
    node_type: str | None,
    serverless: bool,
    tags: dict[str, str],
    tier: str,
) -> tuple[Any, ...]:
    job_id = _runs.job_id_for(job_key)
    run_id = _runs.run_id_for(_runs.base_local_id(run_local_id))
    metadata = (
        cluster_id,
        None if job_id is None else str(job_id),
        None,
        None,
        node_type,
        str(run_id),
        None,
        None,
        None,
        None,
        job_name,
        job_name,
        None,
    )
    return (
        f"{record}-{_runs.stable_id_hex(record)}",
        ACCOUNT_ID,
        WORKSPACE_ID,
        sku,
        cloud,
        start,
        end,
        start.date(),
        tags,
        "DBU",
        Decimal(f"{quantity:.18f}"),
        metadata,
        (LOCAL_USER, LOCAL_USER),
        "ORIGINAL",
        end.date(),
        "JOBS",
        (tier, None, serverless, False),
        "COMPUTE_TIME",
    )


def price_rows(model: dict[str, Any]) -> list[tuple[Any, ...]]:
    start = datetime.fromisoformat(str(model.get("price_start_time", "2023-01-01T00:00:00Z")).replace("Z", "+00:00"))
    currency = model.get("currency_code", "USD")
    return [
        (start, None, ACCOUNT_ID, sku, cloud, currency, "DBU", (Decimal(str(price)),))
        for sku, price in (model.get("list_prices") or {}).items()
        for cloud in ("AWS", "AZURE", "GCP")
    ]


_RESULT = {"SUCCESS": "SUCCEEDED", "FAILED": "FAILED", "CANCELED": "CANCELLED"}
_TERMINATION = {"SUCCESS": "SUCCESS", "FAILED": "RUN_EXECUTION_ERROR", "CANCELED": "USER_CANCELED"}


def timeline_rows(runs: dict[str, JobRun]) -> list[tuple[Any, ...]]:
    clusters: dict[str, list[str]] = {}
    for use in _runs.cluster_uses(runs):
        clusters.setdefault(use.local_run_id, []).append(use.cluster_id)
    rows = []
    for local_id, run in runs.items():
        job_id = _runs.job_id_for(run.job)
        base = _runs.base_local_id(local_id)
        rows.append(
            (
                ACCOUNT_ID,
                WORKSPACE_ID,
                None if job_id is None else str(job_id),
                str(_runs.run_id_for(base)),
                run.start,
                run.end,
                "ONETIME" if base == local_id else "RETRY",
                "SUBMIT_RUN" if job_id is None else "JOB_RUN",
                run.job_name,
                sorted(clusters.get(local_id, [])),
                _RESULT.get(run.state) if run.end else None,
                _TERMINATION.get(run.state) if run.end else None,
                dict(run.parameters),
            )
        )
    return rows


def cluster_rows(runs: dict[str, JobRun]) -> list[tuple[Any, ...]]:
    rows = []
    for use in _runs.cluster_uses(runs):
        auto = use.autoscale
        rows.append(
            (
                ACCOUNT_ID,
                WORKSPACE_ID,
                use.cluster_id,
                _runs.cluster_name(use),
                LOCAL_USER,
                use.start,
                None if use.running else use.end,
                use.driver_node_type_id,
                use.node_type_id,
                None if auto else use.workers,
                auto[0] if auto else None,
                auto[1] if auto else None,
                use.spec.get("autotermination_minutes"),
                bool(use.spec.get("enable_elastic_disk", False)),
                {str(k): str(v) for k, v in (use.spec.get("custom_tags") or {}).items()},
                "JOB",
                [],
                None,
                None,
                use.spec.get("spark_version"),
                use.end if not use.running else use.start,
                (use.end if not use.running else use.start).date(),
                use.spec.get("data_security_mode"),
                use.spec.get("policy_id"),
            )
        )
    return rows


# ----------------------------------------------------------------------------- materialization


def refresh(*, env: str | None = None, force: bool = False) -> bool:
    """Rewrite the local system tables if the run history changed; True when they were rewritten."""
    from retail_lakehouse import engine
    from retail_lakehouse.core.config import load_settings

    settings = load_settings(env)
    model_path = MODEL_PATH
    key = str(settings.warehouse)
    with _lock:
        stamp = (_runs.fingerprint(settings.env), model_path.stat().st_mtime_ns)
        if not force and _refreshed.get(key) == stamp and all(
            (engine.table_dir(n, settings) / "_delta_log").is_dir() for n in local_names(settings.env).values()
        ):
            return False
        runs = _runs.load_runs(settings.env)
        model = load_model(model_path)
        spark = engine.get_spark(settings.env)
        data = {
            "system.billing.usage": (usage_rows(runs, model), USAGE_SCHEMA),
            "system.billing.list_prices": (price_rows(model), PRICES_SCHEMA),
            "system.lakeflow.job_run_timeline": (timeline_rows(runs), TIMELINE_SCHEMA),
            "system.compute.clusters": (cluster_rows(runs), CLUSTERS_SCHEMA),
        }
        names = local_names(settings.env)
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {settings.catalog}.{settings.schema('monitoring')}")
        for system_name, (rows, schema) in data.items():
            full = names[system_name]
            path = engine.table_dir(full, settings)
            df = spark.createDataFrame(rows, schema)
            df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(str(path))
            spark.sql(f"CREATE TABLE IF NOT EXISTS {full} USING delta LOCATION '{sql_string(str(path))}'")
        _refreshed[key] = stamp
        return True


def local_names(env: str | None = None) -> dict[str, str]:
    """System table name -> the local table that holds it."""
    from retail_lakehouse.core.config import load_settings

    settings = load_settings(env)
    schema = f"{settings.catalog}.{settings.schema('monitoring')}"
    return {name: f"{schema}.{local}" for name, local in TABLES.items()}


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
