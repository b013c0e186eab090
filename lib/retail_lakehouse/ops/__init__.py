"""Ops procedures of the runbook: the logic behind `ops_notebooks/`, with audit and safety rails."""
