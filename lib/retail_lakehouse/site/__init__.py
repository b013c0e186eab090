"""The runbook site: the Jupyter Book builder and its executed example runs."""
