"""The per-segment CSV log: one row per segment, flushed as it is written.

Columns (outputs/record.py's table): id, stream (serve), source, segment, speaker (with
[speakers] enabled), start_s, end_s, duration_s, wall_time, one column per emotion,
top_emotion, latency_ms, status (ok | dropped | error, and interim when interim rows are
asked for). `id` names the segment in
the JSON Lines log and its saved audio (RUN-SOURCE-NNNN: the run's start time, the file or
device, the segment's index). Every row is flushed to the operating system at once, so a
run killed even with SIGKILL leaves only complete rows.
Appending to a file with another header is refused: mixing models would mix columns.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...model.errors import EmomonError
from .record import FIELDS, Row, columns

STATUSES = ("ok", "dropped", "error")
DIGITS = {f.name: f.digits for f in FIELDS}


def _text(column: str, value: Any) -> Any:
    """A CSV cell: as many decimals as the record's table says (a share: 6, float32's
    precision), a missing value empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{DIGITS.get(column) or DIGITS['shares']}f}"
    return value


class CsvLog:
    def __init__(
        self, path: str | Path, emotions: Sequence[str], streams: bool = False, speakers: bool = False
    ) -> None:
        self.path = Path(path)
        self.emotions = tuple(emotions)
        self.streams, self.speakers = streams, speakers  # serve: a `stream` column; speakers: `speaker`
        self.header = columns("c", self.emotions, streams, speakers)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists:
            self._check_header()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", newline="", encoding="utf-8")
        except OSError as e:
            raise EmomonError(f"CSV file '{self.path}' cannot be opened for writing: {e.strerror}.") from e
        self._writer = csv.writer(self._file)
        if not exists:
            self._writer.writerow(self.header)
            self._file.flush()

    def _check_header(self) -> None:
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                found = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise EmomonError(f"CSV file '{self.path}' exists but cannot be read to check its header: {e}.") from e
        if found != self.header:
            raise EmomonError(
                f"CSV file '{self.path}' already has other columns ({', '.join(found[:8])}...); "
                "choose another file or remove it, so that rows of different models do not mix."
            )

    def write(self, row: Row) -> None:
        if row.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {row.status!r}")
        fields = row.flat("c", self.emotions, self.streams, self.speakers)
        self._writer.writerow([_text(k, v) for k, v in fields.items()])
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
