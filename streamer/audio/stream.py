"""The streaming core: one audio stream in, its cuts out, with no threads and no clocks.

`AudioStream.push(block)` takes the next block of a stream (a microphone, a file, a
server's WebSocket; at any sample rate) and returns what it cut: each finished segment,
and, while a segment stays open, its audio so far every `interim_s` seconds of it;
`finish()` closes the stream. In the spirit of silero's `VADIterator`, a caller that owns
the timing (live, replay, serve, batch, Ray) only feeds blocks and forwards cuts.

Inside: a `Resampler` to 16 kHz when the stream has another rate (sources and the
microphone deliver blocks at their own rate: this is the one place audio is resampled as it
streams), and one `Segmenter` per channel (by channel, `each`: a file recorded with one
person per channel; else the caller's blocks are mono).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...model.audio import SAMPLE_RATE
from .segmenter import Segment, Segmenter, VadSettings


@dataclass(frozen=True)
class Cut:
    """A segment the stream gave: `channel` is the file's channel with `each` (else None);
    `interim`: the audio so far of a segment still open."""

    segment: Segment
    channel: int | None = None
    interim: bool = False


class InterimClock:
    """When a segment still open has grown by another `every_s` seconds: then `due()` gives
    the audio so far (an interim segment), else None. One clock per segmenter."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._next: tuple[int, float] = (-1, 0.0)  # (segment index, seconds)

    def due(self, seg: Segmenter) -> Segment | None:
        if self.every_s <= 0 or not seg.in_speech:
            return None
        index, at = self._next
        if index != seg.count:  # a new open segment
            index, at = seg.count, self.every_s
        so_far = None
        if (seg.t - seg.seg_start) / SAMPLE_RATE >= at:
            so_far = seg.open_segment()
            at += self.every_s
        self._next = (index, at)
        return so_far


class Resampler:
    """A stream's blocks at `rate` as 16 kHz blocks (soxr's streaming resampler keeps its
    state across blocks); `finish()` gives the tail. At 16 kHz blocks pass as they are."""

    def __init__(self, rate: int, width: int = 1, each: bool = False) -> None:
        self.rate, self.width, self.each = rate, width, each
        self._soxr = None

    def push(self, block: np.ndarray) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return block
        if self._soxr is None:
            import soxr

            self._soxr = soxr.ResampleStream(self.rate, SAMPLE_RATE, self.width, dtype="float32")
        return self._soxr.resample_chunk(block)

    def finish(self) -> np.ndarray:
        tail = np.zeros((0, self.width) if self.each else 0, np.float32)
        return tail if self._soxr is None else self._soxr.resample_chunk(tail, last=True)


class AudioStream:
    def __init__(self, vad: VadSettings, rate: int = SAMPLE_RATE, each: bool = False, interim_s: float = 0.0) -> None:
        self.vad, self.rate, self.each, self.interim_s = vad, rate, each, interim_s
        self.segmenters: list[Segmenter] = [] if each else [Segmenter(vad)]  # by channel: once the first block comes
        self.clocks = [InterimClock(interim_s) for _ in self.segmenters]
        self._resampler: Resampler | None = None

    def push(self, block: np.ndarray) -> list[Cut]:
        """The cuts this block completes: mono float32, or (n, channels) with `each`."""
        if not self.segmenters:
            self.segmenters = [Segmenter(self.vad) for _ in range(block.shape[1])]
            self.clocks = [InterimClock(self.interim_s) for _ in self.segmenters]
        if self._resampler is None:
            self._resampler = Resampler(self.rate, len(self.segmenters), self.each)
        return list(self._cut(self._resampler.push(block)))

    def cut_all(self, audio: np.ndarray, block: int = 0) -> list[Cut]:
        """A whole recording: every cut push() and finish() give, in order, the audio pushed
        at once or in pieces of `block` samples (as a sound card delivers them)."""
        step = block or max(1, len(audio))
        return [c for i in range(0, len(audio), step) for c in self.push(audio[i : i + step])] + self.finish()

    def finish(self) -> list[Cut]:
        """The end of the stream: the resampler's tail, then every open segment long enough."""
        cuts = []
        if self._resampler is not None:
            cuts += self._cut(self._resampler.finish(), interim=False)
        for c, seg in enumerate(self.segmenters):
            last = seg.finish()
            if last is not None:
                cuts.append(Cut(last, c if self.each else None))
        return cuts

    @property
    def loudest(self) -> Segmenter | None:
        """The channel the dashboard's input meter shows (None before the first block)."""
        return max(self.segmenters, key=lambda s: s.level) if self.segmenters else None

    def _cut(self, block: np.ndarray, interim: bool = True) -> Iterator[Cut]:
        for c, (seg, clock) in enumerate(zip(self.segmenters, self.clocks)):
            channel = c if self.each else None
            for s in seg.push(block[:, c] if self.each else block):
                yield Cut(s, channel)
            so_far = clock.due(seg) if interim else None
            if so_far is not None:
                yield Cut(so_far, channel, interim=True)


def speech_span(audio: np.ndarray, settings: VadSettings | None = None) -> tuple[int, int]:
    """Sample range from the first speech segment's start to the last one's end, as the
    monitor would cut this 16 kHz recording; the whole of it when no speech is found."""
    stream = AudioStream(settings or VadSettings())
    seg = stream.segmenters[0]  # silence after the end, so that the last segment closes as it would live
    tail = np.zeros(SAMPLE_RATE * (seg.s.hangover_ms + seg.s.window_ms) // 1000 + seg.frame, np.float32)
    found = [c.segment for c in stream.cut_all(np.concatenate([np.asarray(audio, np.float32), tail]))]
    if not found:
        return 0, len(audio)
    return int(round(found[0].start_s * SAMPLE_RATE)), min(len(audio), int(round(found[-1].end_s * SAMPLE_RATE)))
