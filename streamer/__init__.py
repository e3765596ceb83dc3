"""emomon.streamer: everything around the model at run time: audio in, the monitor, outputs,
serve and batch (docs/architecture.md)."""
