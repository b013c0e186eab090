"""Retail lakehouse runbook: engine, table registry, writes, jobs and ops for Databricks and local."""

from retail_lakehouse.core.errors import LakehouseError

__all__ = ["LakehouseError", "__version__"]
__version__ = "0.1.0"
