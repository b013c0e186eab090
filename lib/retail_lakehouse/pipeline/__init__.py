"""The medallion pipeline's logic: ingestion (bronze), silver, gold and data-quality checks."""
