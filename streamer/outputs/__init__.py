"""Where results go: the row format and CSV log (csv_log.py), JSON Lines, saved segment
audio, and the one result handler that feeds them (sinks.py)."""
