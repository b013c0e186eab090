"""retail_data_quality_checks: quality checks of silver and gold (the Databricks job of the same name).

Scheduled by the asset `retail_datalake.gold` (a successful `retail_transformation`); re-run by hand
with `airflow dags trigger retail_data_quality_checks` (optionally `-c '{"business_date": "2024-01-05"}'`).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # _retail_common, whichever way the folder is parsed

from _retail_common import default_args, job_parameters, run_job_task  # noqa: E402
from airflow.sdk import DAG, Asset, Param  # noqa: E402

JOB = "retail_data_quality_checks"
GOLD = Asset(name="retail_datalake.gold", uri="lakehouse://retail_datalake/gold")

with DAG(
    dag_id=JOB,
    description="Quality checks of silver and gold (Databricks job retail_data_quality_checks)",
    schedule=[GOLD],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={k: Param(v, type="string") for k, v in job_parameters(JOB).items()},
    tags=["retail", "quality", "databricks"],
) as dag:
    run_job_task(JOB, execution_timeout=timedelta(hours=1))
