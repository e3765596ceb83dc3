"""Where results go: the segment record, the CSV and JSON Lines logs, saved audio, the
result handler and plot (docs/architecture.md)."""
