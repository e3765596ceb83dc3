"""The record of one segment on its way through emomon: the `Job` a source hands to the
scorer and the `Result` every sink receives (the CSV and JSON Lines logs, saved audio, the
dashboard, serve's messages). Below the monitor, serve and batch, which all speak it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    status: str  # ok | dropped | error
    prediction: Prediction | None = None
    error: str = ""
    latency_ms: float | None = None  # segment complete -> prediction ready
    queue_ms: float | None = None  # of which waiting in the queue
