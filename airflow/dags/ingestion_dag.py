"""retail_ingestion: source systems -> bronze, daily at 02:00 UTC (the Databricks job `retail_ingestion`).

On success it updates the asset `retail_datalake.bronze`, which schedules `retail_transformation`.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # _retail_common, whichever way the folder is parsed

from _retail_common import default_args, job_parameters, run_job_task  # noqa: E402
from airflow.sdk import DAG, Asset, Param  # noqa: E402

JOB = "retail_ingestion"
BRONZE = Asset(name="retail_datalake.bronze", uri="lakehouse://retail_datalake/bronze")

with DAG(
    dag_id=JOB,
    description="Source systems -> bronze (Databricks job retail_ingestion)",
    schedule="0 2 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={k: Param(v, type="string") for k, v in job_parameters(JOB).items()},
    tags=["retail", "ingestion", "databricks"],
) as dag:
    run_job_task(JOB, execution_timeout=timedelta(hours=2), outlets=[BRONZE])
