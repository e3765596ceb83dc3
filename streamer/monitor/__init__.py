"""`emomon live` and `emomon replay`: the worker, the pipeline they share, the dashboard
(docs/architecture.md)."""
