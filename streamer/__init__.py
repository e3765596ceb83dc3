"""emomon's live monitor: capture, VAD segmentation, inference worker, dashboard, CSV log."""
