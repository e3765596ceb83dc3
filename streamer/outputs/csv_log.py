"""The per-segment CSV log: one row per segment, written as it comes.

Columns (outputs/record.py's table): id, stream (serve), source, segment, speaker (with
[speakers] enabled), start_s, end_s, duration_s, wall_time, one column per emotion,
top_emotion, latency_ms, status (ok | dropped | error | lost, and interim when interim
rows are asked for). `id` names the segment in the JSON Lines log and its saved audio
(RUN-SOURCE-NNNN: the run's start time, the file or device, the segment's index). Every
row goes to the operating system whole as it is written, and a write that fails is cut
back (line_file.py), so a run killed even with SIGKILL, or a disk that fills, leaves only
complete rows. Appending to a file with another header is refused: mixing models would
mix columns.

A text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is written with
a leading `'` (OWASP's rule against formula injection: a spreadsheet would run a file name
such as `=HYPERLINK(...)`); `read_cell` takes it off again (emomon plot reads it so).
File names that are not UTF-8 are written with `\\xNN` escapes (model/errors.py: printable).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...model.errors import EmomonError, OutputError, printable
from .line_file import LineFile
from .record import FIELDS, Row, columns

STATUSES = ("ok", "dropped", "error", "lost")
DIGITS = {f.name: f.digits for f in FIELDS}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(column: str, value: Any) -> Any:
    """A CSV cell: as many decimals as the record's table says (a share: 6, float32's
    precision), a missing value empty, text that a spreadsheet would take for a formula quoted."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{DIGITS.get(column) or DIGITS['shares']}f}"
    return text_cell(value) if isinstance(value, str) else value


def text_cell(value: str) -> str:
    """A text cell of any CSV emomon writes: printable, and quoted where it would be a formula."""
    value = printable(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def read_cell(text: str) -> str:
    """A text cell as written before `_text` quoted it."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


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
        self._file = LineFile(str(self.path), "CSV file")
        if not exists:
            self._write([self.header])

    def _write(self, rows: list[list[Any]]) -> None:
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        self._file.write(text.getvalue())

    def _check_header(self) -> None:
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                found = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise OutputError(f"CSV file '{self.path}' exists but cannot be read to check its header: {e}.") from e
        if found != self.header:
            raise EmomonError(
                f"CSV file '{self.path}' already has other columns ({', '.join(found[:8])}...); "
                "choose another file or remove it, so that rows of different models do not mix."
            )

    def write(self, row: Row) -> None:
        if row.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {row.status!r}")
        fields = row.flat("c", self.emotions, self.streams, self.speakers)
        self._write([[_text(k, v) for k, v in fields.items()]])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
