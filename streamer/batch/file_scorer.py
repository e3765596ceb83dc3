"""One file through the monitor's own stages: its blocks (audio/sources.py), the streaming
core (audio/stream.py), an Engine (model/interface.py), and the segment record's rows
(outputs/record.py: Row, FIELDS).

`cut` is the CPU half (decode, resample, VAD) and `FileScorer.score` the model half, so that an engine
may run them in different processes (Ray: tasks, then actors); `score_file` runs both in
one. A file streams through in blocks: memory holds the open segments and the rows, never
the whole recording. What a file that breaks off gave before the break is kept, and the
file is reported as an error, as replay does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...model.errors import AudioError
from ..audio.segmenter import Segment, VadSettings
from ..audio.sources import Source, open_source
from ..audio.stream import AudioStream
from ..outputs.record import Job, Row, segment_id
from ..scoring import score, split_by_speaker
from .inputs import Item

if TYPE_CHECKING:
    import pyarrow as pa

    from ...model.interface import Engine
    from ...model.tracker import Speakers, SpeakerSettings

HASH_CHUNK = 1 << 20
ROW_FILE_INFO = ("file_duration_s", "sample_rate", "sha256")  # what every row carries of its file


@dataclass(frozen=True)
class BatchJob:
    """What every worker needs, whatever the engine."""

    out: str
    bundle: str
    device: str
    dtype: str
    encoder_name: str | None
    vad: VadSettings
    each: bool
    run: str
    max_batch: int
    threads: int
    part_s: float
    schema: pa.Schema
    emotions: tuple[str, ...]
    speakers: SpeakerSettings | None = None  # --speakers: who spoke each segment
    adapts: bool = False  # the bundle's normalisation follows each stream (a session per stream)
    runtime_engine: str = "torch"  # [runtime] engine: torch or onnx (model/engines.py)

    def load(self):
        """The Predictor (or the ONNX engine), on `threads` threads (set before torch starts its pools)."""
        import torch

        from ...model.engines import open_predictor

        torch.set_num_threads(self.threads)
        return open_predictor(
            self.bundle, self.device, self.dtype, self.runtime_engine, self.encoder_name, self.threads
        )

    def speaker_stage(self) -> Speakers | None:
        """With --speakers, the speaker encoder and tracker (model/tracker.py) beside the Predictor."""
        if self.speakers is None:
            return None
        from ...model.tracker import Speakers

        return Speakers(self.speakers)


class Stopped(Exception):
    """The run is being stopped (Ctrl-C, SIGTERM): the file in progress is abandoned."""


@dataclass
class FileResult:
    """A file's rows (typed values, in output column order) and its one record for files.parquet."""

    rows: list[dict[str, Any]]
    record: dict[str, Any]
    audio_s: float = 0.0


def open_file(item: Item, each: bool) -> tuple[Source, dict[str, Any]]:
    """The file opened once, as the source `cut` reads (audio/sources.py), and what its rows
    carry of it: duration (as the file says it), sample rate, channels and SHA-256 (read in
    1 MiB chunks). Raises AudioError in one sentence."""
    source = open_source(item.source, each)
    info = {"file_duration_s": source.duration_s, "sample_rate": source.rate, "channels": source.channels}
    digest = hashlib.sha256()
    try:
        with open(item.source, "rb") as raw:
            while chunk := raw.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError as e:
        source.close()
        raise AudioError(f"Audio file '{item.source}' cannot be read: {e.strerror}.") from e
    return source, {**info, "sha256": digest.hexdigest()}


def cut(source: Source, vad: VadSettings, each: bool) -> Iterator[tuple[int | None, Segment]]:
    """(channel, segment) as the file streams in (audio/stream.py): channel None when the
    channels are mixed. A file that breaks off still gives the segments heard before the
    break, then raises. The source is closed at the end."""
    stream, broke = AudioStream(vad, source.rate, each=each), None
    try:
        for block in source.blocks():
            for c in stream.push(block):
                yield c.channel, c.segment
    except AudioError as e:
        broke = e
    finally:
        source.close()
    for c in stream.finish():
        yield c.channel, c.segment
    if broke is not None:
        raise broke


def session_key(item: Item, channel: int | None) -> str:
    """The normalisation session of a stream: the file, as replay uses it, and its channel."""
    return item.source if channel is None else f"{item.source}#channel{channel}"


def row_of(
    item: Item,
    run: str,
    emotions: tuple[str, ...],
    channel: int | None,
    span: tuple[int, float, float],
    shares,
    status: str,
    speaker: str | None = None,
    part: int = 0,
) -> dict[str, Any]:
    """The output row of one segment, `span` its (index, start_s, end_s) (outputs/record.py's
    table, record p)."""
    tag = hashlib.sha1(os.fsencode(item.key)).hexdigest()[:6] + ("" if channel is None else f"-c{channel}")
    index, start_s, end_s = span
    row = Row(item.source, index, start_s, end_s, shares=shares, status=status,
              id=segment_id(run, item.source, index, tag, part), speaker=speaker, channel=channel)  # fmt: skip
    return row.flat("p", emotions, speaker=speaker is not None)


class FileScorer:
    """The model half: segments of one file in, rows out, `max_batch` segments per model call
    and one normalisation session per stream (what replay's worker does, without its thread)."""

    def __init__(self, predictor: Engine, run: str, max_batch: int, speakers: Speakers | None = None) -> None:
        self.predictor, self.run, self.max_batch, self.speakers = predictor, run, max_batch, speakers
        self.emotions = tuple(predictor.emotions)
        self.sessions: set[str] = set()  # the normalisation sessions of the file being scored

    def score(
        self, item: Item, segments: Iterator[tuple[int | None, Segment]], stop: Callable[[], bool] = lambda: False
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Rows in (channel, segment) order, and why any segments failed."""
        rows: list[dict[str, Any]] = []
        failed: list[str] = []
        pending: dict[int | None, list[Segment]] = {}
        try:
            for channel, seg in segments:
                waiting = pending.setdefault(channel, [])
                waiting.append(seg)
                if len(waiting) >= self.max_batch:
                    if stop():
                        raise Stopped
                    rows += self._run(item, channel, waiting, failed)
                    waiting.clear()
        except AudioError as e:  # the file broke off: what came before it is scored and kept
            failed.append(str(e))
        for channel, waiting in pending.items():
            rows += self._run(item, channel, waiting, failed)
        for key in self.sessions:
            self.predictor.end_session(key)
        self.sessions.clear()
        for channel in pending:
            if self.speakers is not None:
                self.speakers.forget(session_key(item, channel))
        rows.sort(key=lambda r: (-1 if r["channel"] is None else r["channel"], r["segment"], r["start_s"]))
        return rows, failed

    def _run(self, item: Item, channel: int | None, segs: list[Segment], failed: list[str]) -> list[dict[str, Any]]:
        if not segs:
            return []
        results = score(self.predictor, jobs_of(self.speakers, item, channel, segs), self.sessions)
        errors = [r.error for r in results if r.status != "ok"]
        if errors:  # as in replay: an error row per segment, the run goes on
            failed.append(f"{len(errors)} segment(s) could not be scored ({errors[0]})")
        return [row_of(item, self.run, self.emotions, channel, r.job.segment.span, r.prediction and r.prediction.shares,
                       r.status, r.job.speaker, r.job.part) for r in results]  # fmt: skip


def jobs_of(speakers: Speakers | None, item: Item, channel: int | None, segs: list[Segment]) -> list[Job]:
    """A stream's next segments as the scorer's jobs, in the order spoken: the stream is the
    source (its normalisation session, as in replay); with speakers, a channel of its own is
    its speaker (--channels each), and a mixed stream's segments are cut at turn changes and
    named by the stream's tracker (scoring.py)."""
    key = session_key(item, channel)
    if speakers is not None and channel is not None:
        return [Job(key, s, speaker=f"channel {channel}", channel=channel) for s in segs]
    jobs = [Job(key, s, channel=channel) for s in segs]
    return jobs if speakers is None else split_by_speaker(speakers, jobs)


def new_record(item: Item, error: str = "") -> dict[str, Any]:
    """A file's ledger record before anything is known of it (status error with `error`)."""
    return {"path": item.key, "source": item.source, "status": "error" if error else "ok", "error": error,
            "segments": 0, "file_duration_s": None, "sample_rate": None, "channels": None, "sha256": None}  # fmt: skip


def close_record(record: dict[str, Any], segments: int, failed: list[str]) -> dict[str, Any]:
    """A file's record once its rows are known: their count, and error with the reasons, if any."""
    record["segments"] = segments
    if failed:
        record.update(status="error", error="; ".join(failed))
    return record


def score_file(
    item: Item, scorer: FileScorer, vad: VadSettings, each: bool, stop: Callable[[], bool] = lambda: False
) -> FileResult:
    """A whole file: its record says ok, or error with one sentence (rows before a break stay)."""
    record = new_record(item)
    try:
        source, info = open_file(item, each)
    except AudioError as e:
        return FileResult([], {**record, "status": "error", "error": str(e)})
    record.update(info)
    rows, failed = scorer.score(item, cut(source, vad, each), stop)
    info = {k: record[k] for k in ROW_FILE_INFO}
    rows = [{**r, **info} for r in rows]
    return FileResult(rows, close_record(record, len(rows), failed), audio_s=record["file_duration_s"] or 0.0)
