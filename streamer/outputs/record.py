"""The record of one segment on its way through emomon: the `Job` a source hands to the
scorer, the `Result` every sink receives, and the `Row` every output writes: the CSV and
JSON Lines logs, serve's WebSocket message and the client's decoder of it, and batch's
Parquet schema, all from one table of fields (FIELDS). Below the monitor, serve and batch,
which all speak it."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model.errors import printable

if TYPE_CHECKING:
    from ...model.predictor import Prediction
    from ..audio.segmenter import Segment


@dataclass
class Job:
    source: str
    segment: Segment
    ready: float = field(default_factory=time.perf_counter)  # when the segment was complete
    interim: bool = False  # the audio so far of a segment that is still open
    stream: int | None = None  # emomon serve: the stream it came from
    speaker: str | None = None  # with [speakers] enabled, or by channel: who spoke it
    channel: int | None = None  # replay --channels each: the file's channel it came from
    part: int = 0  # with [speakers]: 1, 2, ... for the parts of a segment split at turn changes
    last: bool = True  # the last (or only) result this segment gives: serve counts a segment done then

    @property
    def session(self) -> str:
        """Speaker-mode normalisation's session: the source, or one per tracked speaker in it."""
        return self.source if self.speaker is None else f"{self.source} / {self.speaker}"


@dataclass
class Result:
    job: Job
    status: str  # ok | dropped | error | lost (input that never reached the segmenter)
    prediction: Prediction | None = None
    error: str = ""
    latency_ms: float | None = None  # segment complete -> prediction ready
    queue_ms: float | None = None  # of which waiting in the queue


def segment_id(run: str, source: str, index: int, tag: str = "", part: int = 0) -> str:
    """RUN-SOURCE-NNNN (RUN-SOURCE-TAG-NNNN with a tag; -P after it for part P of a segment
    split at a turn change): unique across runs and sources, safe as a file name. emomon
    batch tags a file's path digest and channel (many files share a name), replay --channels
    each the channel."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem if Path(source).suffix else source).strip("._")
    return f"{run}-{name[:40] or 'input'}{'-' + tag if tag else ''}-{index:04d}{f'-{part}' if part else ''}"


# The one definition of a segment's fields: every output's layout comes from this table.
# Records: c = the CSV log, j = the JSON Lines log, w = serve's WebSocket message, p = emomon
# batch's Parquet. `digits`: decimals in the text records (CSV, JSON). `when`: an optional
# field, written only where the run has it ("stream": serve's logs; "speaker": speakers are
# tracked; the JSON records also leave out an empty one). "shares" stands for one field per
# emotion in the flat records (c, p) and for the object {emotion: share} in j and w.
@dataclass(frozen=True)
class Field:
    name: str
    type: str  # string | int | seconds | share | ms
    records: str
    digits: int | None = None
    when: str = ""


FIELDS = (
    Field("type", "string", "jw"),  # segment | interim
    Field("id", "string", "cjp"),  # RUN-SOURCE-NNNN: also the saved audio's name
    Field("stream", "int", "cj", when="stream"),
    Field("source", "string", "cjp"),
    Field("channel", "int", "p"),  # batch --channels each; replay's is in speaker and id
    Field("segment", "int", "cjwp"),
    Field("part", "int", "w", when="part"),  # a segment split at a turn change: 1, 2, ...
    Field("speaker", "string", "cjwp", when="speaker"),
    Field("start_s", "seconds", "cjwp", 3),
    Field("end_s", "seconds", "cjwp", 3),
    Field("duration_s", "seconds", "cjp", 3),
    Field("wall_time", "string", "cj"),  # ISO 8601 in live mode
    Field("shares", "share", "cjwp", 6),
    Field("top_emotion", "string", "cjwp"),
    Field("latency_ms", "ms", "cjw", 1),
    Field("status", "string", "cjwp"),  # ok | dropped | error | lost (the CSV's interim rows: interim)
    Field("error", "string", "w", when="error"),
)
WS_SHARE_DIGITS = 4  # the WebSocket message's shares: what a page shows, a quarter of the bytes


def columns(record: str, emotions: Sequence[str], stream: bool = False, speaker: bool = False) -> list[str]:
    """The flat columns of a record (c or p) in order, one per emotion in place of shares."""
    out: list[str] = []
    for f in FIELDS:
        if record not in f.records or (f.when == "stream" and not stream) or (f.when == "speaker" and not speaker):
            continue
        out += list(emotions) if f.name == "shares" else [f.name]
    return out


def parquet_types(emotions: Sequence[str], speaker: bool = False) -> list[tuple[str, str]]:
    """(column, Arrow type name) of batch's segment rows: shares as float32 (the model's precision)."""
    kinds = {"string": "string", "int": "int32", "seconds": "float64", "share": "float32", "ms": "float64"}
    by_name = {f.name: kinds[f.type] for f in FIELDS}
    return [(c, by_name.get(c, "float32")) for c in columns("p", emotions, speaker=speaker)]


@dataclass
class Row:
    """One segment's record, as every output writes it (the table above says which fields)."""

    source: str  # file path, or the input device's name
    segment: int
    start_s: float
    end_s: float
    wall_time: str = ""  # ISO 8601 in live mode
    shares: dict[str, float] | None = None  # None for dropped and failed segments
    latency_ms: float | None = None
    status: str = "ok"
    id: str = ""
    stream: int | None = None  # emomon serve: the stream's number
    speaker: str | None = None  # None: not tracked
    channel: int | None = None
    part: int = 0
    error: str = ""
    interim: bool = False  # the audio so far of a segment still open

    @property
    def top_emotion(self) -> str:
        return max(self.shares, key=self.shares.__getitem__) if self.shares else ""

    @classmethod
    def of(cls, result: Result, id: str = "", wall_time: str = "", speaker: bool = True) -> Row:
        """A scorer's result as a record (`speaker`: the run tracks speakers)."""
        job, seg, p = result.job, result.job.segment, result.prediction
        return cls(job.source, seg.index, seg.start_s, seg.end_s, wall_time, p.shares if p else None,
                   result.latency_ms, result.status, id, job.stream, job.speaker if speaker else None, job.channel,
                   job.part, result.error, job.interim)  # fmt: skip

    def values(self, emotions: Sequence[str]) -> dict[str, Any]:
        """Every field as a typed value, the shares flat (a share the row lacks is None)."""
        shares = self.shares or {}
        return {
            "type": "interim" if self.interim else "segment", "id": self.id, "stream": self.stream,
            "source": printable(self.source), "channel": self.channel, "segment": self.segment, "part": self.part,
            "speaker": self.speaker, "start_s": self.start_s, "end_s": self.end_s,
            "duration_s": self.end_s - self.start_s, "wall_time": self.wall_time,
            **{e: shares.get(e) for e in emotions}, "top_emotion": self.top_emotion,
            "latency_ms": self.latency_ms, "status": "interim" if self.interim else self.status,
            "error": printable(self.error),
        }  # fmt: skip

    def flat(self, record: str, emotions: Sequence[str], stream: bool = False, speaker: bool = False) -> dict:
        """The row of a flat record (c: CSV, p: Parquet) as typed values, in column order."""
        values = self.values(emotions)
        return {c: values[c] for c in columns(record, emotions, stream, speaker)}

    def to_json(self, record: str, emotions: Sequence[str], share_digits: int = 6) -> dict[str, Any]:
        """The object of a JSON record (j: JSON Lines, w: WebSocket), rounded as the table says;
        an optional field the row lacks is left out."""
        values = {**self.values(emotions), "status": self.status}
        out: dict[str, Any] = {}
        for f in FIELDS:
            if record not in f.records or (f.when and not values[f.name]):
                continue
            if f.name == "shares":
                out["shares"] = None if self.shares is None else {e: round(self.shares[e], share_digits)
                                                                    for e in emotions}  # fmt: skip
                continue
            v = values[f.name]
            out[f.name] = round(v, f.digits) if f.digits is not None and v is not None else v if v != "" else None
        return out

    @classmethod
    def from_json(cls, msg: dict[str, Any], source: str, emotions: Sequence[str]) -> Row:
        """The inverse of to_json (a client reading the server's messages)."""
        shares = msg.get("shares")
        return cls(source, msg["segment"], msg["start_s"], msg["end_s"], msg.get("wall_time") or "",
                   None if shares is None else {e: float(shares[e]) for e in emotions}, msg.get("latency_ms"),
                   msg.get("status", "ok"), msg.get("id", ""), msg.get("stream"), msg.get("speaker"), None,
                   msg.get("part", 0), msg.get("error", ""), msg.get("type") == "interim")  # fmt: skip
