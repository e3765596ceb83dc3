"""`emomon batch`: archives scored into a Parquet dataset, locally or on Ray
(docs/architecture.md)."""
