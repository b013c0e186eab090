"""The Databricks side: the SDK client (connect, SQL statements), the bundle and deploy."""
