"""retail_transformation: bronze -> silver -> gold (the Databricks job `retail_transformation`).

Scheduled by the asset `retail_datalake.bronze` (a successful `retail_ingestion`); updates
`retail_datalake.gold`, which schedules `retail_data_quality_checks`. A backfill passes
`backfill_start_date` / `backfill_end_date` as DAG params (`airflow dags trigger -c '{...}'`).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # _retail_common, whichever way the folder is parsed

from _retail_common import default_args, job_parameters, run_job_task  # noqa: E402
from airflow.sdk import DAG, Asset, Param  # noqa: E402

JOB = "retail_transformation"
BRONZE = Asset(name="retail_datalake.bronze", uri="lakehouse://retail_datalake/bronze")
GOLD = Asset(name="retail_datalake.gold", uri="lakehouse://retail_datalake/gold")

with DAG(
    dag_id=JOB,
    description="Bronze -> silver -> gold (Databricks job retail_transformation)",
    schedule=[BRONZE],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={k: Param(v, type="string") for k, v in job_parameters(JOB).items()},
    tags=["retail", "transformation", "databricks"],
) as dag:
    run_job_task(JOB, execution_timeout=timedelta(hours=3), outlets=[GOLD])
