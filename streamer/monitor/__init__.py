"""The monitor: the inference worker (worker.py), the pipeline live and replay share
(pipeline.py), the Rich dashboard, `emomon live` and `emomon replay`, and [monitor]."""
