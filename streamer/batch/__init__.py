"""`emomon batch`: recorded archives scored at scale into a Parquet dataset, by worker
processes on this machine (local.py) or a Ray Data pipeline (ray_engine.py); the output
folder and its ledger (store.py), the inputs (inputs.py), one file's scoring (score.py),
the driver (run.py), progress, and [batch] (settings.py)."""
