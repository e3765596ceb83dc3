"""Where results go: the CSV log, the JSON Lines log, saved segment audio, the dashboard
state and one plain printed line per segment (--no-dashboard). One writer at a time: the
worker thread (results) or, under the Display's lock, the source's thread (rows of lost
input: monitor/pipeline.py).

Each output fails alone: one that raises (a full disk, a closed terminal) is said once in
one sentence naming it and its reason, closed, and left out from then on; the others go
on, and the run's exit status says that an output failed (`Outputs.failed`). An output
that cannot be opened stops the run before any audio is read (OutputError, exit 1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ...model.errors import printable
from .audio_saver import AudioSaver
from .csv_log import CsvLog
from .jsonl_log import JsonlLog
from .record import Row, segment_id
from .settings import OutputSettings

log = logging.getLogger("emomon")

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from ...model.predictor import Prediction
    from ..monitor.dashboard import MonitorState
    from .record import Result


def describe(row: Row) -> str:
    """One plain line for a segment."""
    number = "lost" if row.status == "lost" else f"#{row.segment}" + (f".{row.part}" if row.part else "")
    where = f"{printable(Path(row.source).name)} {number} {row.start_s:7.2f}-{row.end_s:7.2f} s"
    where += f"  {row.speaker}" if row.speaker else ""
    if row.status != "ok" or row.shares is None:
        return f"{where}  {row.status.upper()}: {row.error}"
    top = sorted(row.shares.items(), key=lambda kv: -kv[1])[:3]
    shares = "  ".join(f"{e} {v:.2f}" for e, v in top)
    return f"{where}  {shares}  ({row.latency_ms or 0:.0f} ms)" + ("  interim" if row.interim else "")


class Outputs:
    """The worker's result handler. With `stream_start` (live mode: the wall time of stream
    time 0) each record's wall_time is the ISO 8601 time the segment began."""

    def __init__(
        self,
        run: str,
        csv: CsvLog | None = None,
        jsonl: JsonlLog | None = None,
        saver: AudioSaver | None = None,
        console: Console | None = None,
        state: MonitorState | None = None,
        stream_start: Callable[[], datetime | None] | None = None,
        csv_interim: bool = False,
        speakers: bool = False,
    ) -> None:
        self.run, self.csv, self.jsonl, self.saver, self.speakers = run, csv, jsonl, saver, speakers
        self.console, self.state, self.stream_start, self.csv_interim = console, state, stream_start, csv_interim
        self.failed: list[str] = []  # a sentence per output that failed and was closed
        self.lost = 0  # rows of lost input so far

    @classmethod
    def open(
        cls,
        settings: OutputSettings,
        emotions: tuple[str, ...],
        console: Console | None = None,
        state: MonitorState | None = None,
        stream_start: Callable[[], datetime | None] | None = None,
        save_audio: bool = True,
        streams: bool = False,
        speakers: bool = False,
    ) -> Outputs:
        """The outputs [outputs] asks for (CSV, JSON Lines, saved audio), for a new run: the one
        place that opens them, for live, replay, --server and serve (`streams`: a stream column;
        `speakers`: a speaker column and field)."""
        from datetime import UTC

        csv = CsvLog(settings.csv, emotions, streams=streams, speakers=speakers) if settings.csv else None
        try:
            jsonl = JsonlLog(settings.jsonl, settings.attention) if settings.jsonl else None
        except BaseException:
            if csv is not None:
                csv.close()
            raise
        saver = AudioSaver(settings.save_audio) if settings.save_audio and save_audio else None
        run = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return cls(run, csv, jsonl, saver, console, state, stream_start, settings.csv_interim, speakers)

    def __call__(self, result: Result) -> None:
        """A result scored here: its record, the prediction's attention, the segment's audio."""
        self.write(Row.of(result, speaker=self.speakers), result.prediction, result.job.segment.audio)

    def write(self, row: Row, prediction: Prediction | None = None, audio: np.ndarray | None = None) -> None:
        """A record to every output (one scored here, --server's, lost input): its id and
        wall time are this run's."""
        t0 = self.stream_start() if self.stream_start else None
        row.wall_time = (t0 + timedelta(seconds=row.start_s)).isoformat(timespec="milliseconds") if t0 else ""
        if row.status == "lost":  # input that never reached the segmenter: numbered on its own
            self.lost += 1
            row.id = segment_id(self.run, row.source, self.lost, "lost")
        else:
            tag = "" if row.channel is None else f"c{row.channel}"
            row.id = segment_id(self.run, row.source, row.segment, tag, row.part)
        if self.csv is not None and (self.csv_interim or not row.interim):
            self._each("csv", lambda: self.csv.write(row))
        if self.jsonl is not None:
            attention = None if prediction is None else prediction.attention
            hop = 0.0 if prediction is None else prediction.attention_hop_s
            self._each("jsonl", lambda: self.jsonl.write(row, attention, hop))
        if self.saver is not None and audio is not None and not row.interim and row.status == "ok":
            self.saver.save(row.id, audio)  # says its own failures, once, and goes on
        if self.state is not None:
            self._each("state", lambda: self.state.add(row, prediction))
        if self.console is not None:
            self._each("console", lambda: self.console.print(describe(row), markup=False, highlight=False,
                                                             soft_wrap=True))  # fmt: skip

    def _each(self, name: str, write: Callable[[], None]) -> None:
        """One output's write; if it raises, that output is said once, closed and left out."""
        try:
            write()
        except Exception as e:  # noqa: BLE001 - a full disk or a closed terminal must not stop the others
            text = str(e).rstrip(".") or type(e).__name__
            what = {"state": "The dashboard", "console": "The printed lines"}.get(name)
            sentence = f"{what} failed ({text})" if what else text
            sentence += "; the other outputs go on."
            self.failed.append(sentence)
            log.warning("%s", sentence)
            sink = getattr(self, name)
            setattr(self, name, None)
            close = getattr(sink, "close", None)
            if close is not None and name in ("csv", "jsonl"):
                with contextlib.suppress(Exception):
                    close()

    def close(self) -> None:
        for name in ("csv", "jsonl"):
            sink = getattr(self, name)
            if sink is not None:
                self._each(name, sink.close)
