"""The per-segment CSV log: one row per segment, flushed as it is written.

Columns: id, source, segment, speaker (with [speakers] enabled), start_s, end_s,
duration_s, wall_time, one column per emotion, top_emotion, latency_ms, status (ok |
dropped | error, and interim when interim rows are asked for). `id` names the segment in
the JSON Lines log and its saved audio (RUN-SOURCE-NNNN: the run's start time, the file or
device, the segment's index). Every row is flushed to the operating system at once, so a
run killed even with SIGKILL leaves only complete rows.
Appending to a file with another header is refused: mixing models would mix columns.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...model.errors import EmomonError

STATUSES = ("ok", "dropped", "error", "interim")
SECONDS = ("start_s", "end_s", "duration_s")


@dataclass
class Row:
    source: str  # file path, or the input device's name
    segment: int
    start_s: float
    end_s: float
    wall_time: str = ""  # ISO 8601 in live mode
    shares: dict[str, float] | None = None  # None for dropped and failed segments
    latency_ms: float | None = None
    status: str = "ok"
    id: str = ""  # RUN-SOURCE-NNNN, shared with the JSON Lines record and the saved audio
    stream: int | None = None  # emomon serve: the stream's number (the CSV's `stream` column)
    speaker: str | None = None  # with [speakers] enabled (the `speaker` column); None: not tracked

    @property
    def top_emotion(self) -> str:
        return max(self.shares, key=self.shares.__getitem__) if self.shares else ""

    def fields(self, emotions: Sequence[str]) -> dict[str, Any]:
        """The row as typed values in the CSV's column order (no `stream`; `speaker` when it is
        tracked): the one row format of the CSV log and of `emomon batch`'s Parquet (which
        leaves out wall_time and latency_ms). A share the row does not have is None."""
        shares = self.shares or {}
        return {
            "id": self.id, "source": self.source, "segment": self.segment,
            **({"speaker": self.speaker} if self.speaker is not None else {}), "start_s": self.start_s,
            "end_s": self.end_s, "duration_s": self.end_s - self.start_s, "wall_time": self.wall_time,
            **{e: shares.get(e) for e in emotions},
            "top_emotion": self.top_emotion, "latency_ms": self.latency_ms, "status": self.status,
        }  # fmt: skip


def _text(column: str, value: Any) -> Any:
    """A CSV cell: seconds to the millisecond, shares to 6 decimals (float32's precision),
    latency to 0.1 ms, a missing value empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if column in SECONDS else f"{value:.1f}" if column == "latency_ms" else f"{value:.6f}"
    return value


class CsvLog:
    def __init__(
        self, path: str | Path, emotions: Sequence[str], streams: bool = False, speakers: bool = False
    ) -> None:
        self.path = Path(path)
        self.emotions = tuple(emotions)
        self.streams = streams  # emomon serve: a `stream` column after `id`
        self.header = [
            "id", *(["stream"] if streams else []), "source", "segment", *(["speaker"] if speakers else []),
            "start_s", "end_s", "duration_s", "wall_time", *self.emotions, "top_emotion", "latency_ms", "status",
        ]  # fmt: skip
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
        fields = {**row.fields(self.emotions), "stream": row.stream}
        self._writer.writerow([_text(k, fields.get(k)) for k in self.header])
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
