"""Speech segmentation with WebRTC VAD or Silero VAD, as a thread-free state machine.

`Segmenter.push(chunk)` takes 16 kHz float32 mono audio of any length and returns the
segments it completed; `finish()` closes the open one at the end of input. No threads and
no clocks inside: times come from the number of samples pushed, so it is tested with
plain arrays and behaves the same live and in replay.

Decision rule (the usual one for WebRTC VAD): frames of 10/20/30 ms are classified as
voiced or not. Silence turns into speech when at least `open_ratio` of the last
`window_ms` is voiced; the segment then starts `pre_roll_ms` before the first voiced frame
of that window, so word onsets are not clipped. Speech turns into silence when at least
`close_ratio` of the last `hangover_ms` is unvoiced, so pauses inside a sentence shorter
than the hang-over do not split it; the segment ends `post_roll_ms` after its last voiced
frame (the hang-over delays the decision, not the boundary). Segments shorter than
`min_segment_s` are dropped as clicks; speech longer than `max_segment_s` is cut there and
goes on as a new segment (encoder memory grows with the square of the length).

The voice decisions come from WebRTC VAD (`[vad] engine = "webrtc"`, the default: 10-30 ms
frames) or from Silero VAD (`"silero"`, streamer/audio/silero.py: 32 ms frames, voiced
when its speech probability reaches `threshold`). Both feed the same state machine with
the same settings; the two rules below work around WebRTC VAD's limits and apply to it only.

Loud background. WebRTC VAD calls steady noise louder than about -30 dBFS speech (white
noise at -28 dBFS: 99 % of frames voiced; its noise model has a ceiling), so in a noisy
room (10 dB SNR) only `max_segment_s` would cut the speech. The VAD therefore hears each
frame turned down by as much as the background exceeds `max_background_dbfs`; the
background is the 10th percentile of frame levels over the last 5 s, which follows steady
noise and stays low in speech (pauses, closures). Quiet rooms are untouched; segments
carry the original audio.

Word endings above 4 kHz. WebRTC VAD analyses the signal below 4 kHz only (it resamples
to 8 kHz), so a soft word-final fricative or plosive release ("...besucht") that is
audible mostly above 4 kHz is lost in noise and the segment ends early. Inside a segment,
a frame right after a voiced one whose 4-8 kHz level is `high_band_db` above that band's
background (same percentile rule, but at least -70 dBFS: in a file padded with digital
silence the recording's own hiss must not count) counts as voiced too: it can extend a
segment, never open one.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...model.audio import SAMPLE_RATE


def vad_pcm(frames: np.ndarray) -> np.ndarray:
    """WebRTC VAD's 16-bit input: x * 32767 truncated, not the I/O scale of model/audio.py's
    to_pcm16. On purpose: the VAD's decisions at quiet onsets depend on these exact integers
    (to_pcm16 moves 12 of 220 corpus files' speech spans by a frame or two), and the
    default model's training data was trimmed with these."""
    return (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")


@dataclass(frozen=True)
class VadSettings:
    """The [vad] table of config.toml."""

    # What decides voiced or not: "webrtc" (WebRTC VAD) or "silero" (Silero VAD under ONNX
    # Runtime: pip install 'emomon[onnx]' and its model, see streamer/audio/silero.py).
    engine: Literal["webrtc", "silero"] = "webrtc"
    threshold: float = 0.5  # silero: a frame is voiced when its speech probability reaches this
    frame_ms: int = 30  # WebRTC VAD takes 10, 20 or 30 ms frames (Silero VAD: always 32 ms)
    aggressiveness: int = 2  # 0 (keeps most) to 3 (most aggressive at calling audio non-speech)
    window_ms: int = 300  # recent audio looked at to open a segment
    open_ratio: float = 0.6  # voiced share of that window that opens a segment
    hangover_ms: int = 600  # recent audio looked at to close a segment: pauses shorter than this are bridged
    close_ratio: float = 0.9  # unvoiced share of the hang-over that closes the segment
    pre_roll_ms: int = 30  # audio kept before the first voiced frame
    post_roll_ms: int = 0  # audio kept after the last voiced frame (the VAD already runs ~100 ms late)
    min_segment_s: float = 0.5
    max_segment_s: float = 10.0
    # WebRTC VAD calls steady noise louder than about -30 dBFS speech. The VAD hears the input
    # turned down so that the background stays at or below this level; 0 turns that off.
    max_background_dbfs: float = -40.0
    # WebRTC VAD hears below 4 kHz only. Inside a segment, a frame right after a voiced one whose
    # 4-8 kHz level is this far above that band's background continues it (word-final s, sch, t); 0 = off.
    high_band_db: float = 6.0

    def __post_init__(self) -> None:
        if not -80.0 <= self.max_background_dbfs <= 0.0:
            raise ValueError(f"max_background_dbfs must be between -80 and 0 dBFS, not {self.max_background_dbfs}")
        if self.high_band_db < 0:
            raise ValueError(f"high_band_db must be 0 (off) or more, not {self.high_band_db}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {self.threshold}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (WebRTC VAD's frame sizes), not {self.frame_ms}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness}")
        if min(self.window_ms, self.hangover_ms) < self.decision_ms:
            raise ValueError(f"window_ms and hangover_ms must each hold at least one {self.decision_ms} ms frame")
        if not (0 < self.open_ratio <= 1 and 0 < self.close_ratio <= 1):
            raise ValueError("open_ratio and close_ratio must be in (0, 1]")
        if not 0.3 <= self.min_segment_s < self.max_segment_s:
            raise ValueError("min_segment_s must be >= 0.3 (the model's minimum) and below max_segment_s")

    @property
    def decision_ms(self) -> int:
        """Milliseconds per voice decision: frame_ms for WebRTC VAD, 32 for Silero VAD."""
        return self.frame_ms if self.engine == "webrtc" else 32


BACKGROUND_S = 5.0  # history for the background level
BACKGROUND_PERCENTILE = 10
SILENCE_DBFS = -100.0  # level of digital silence
HIGH_BAND_HZ = 4000  # WebRTC VAD hears below this
HIGH_BAND_FLOOR_DBFS = -70.0  # below this a 4-8 kHz level is a recording's own noise, never a word ending


class RollingPercentile:
    """A percentile of the last `size` values, as np.percentile (linear interpolation) gives it.

    The values are kept sorted as well as in order (bisect on a list: two memmoves of at most
    `size` floats per value), so that the VAD, which asks for the background level at every
    frame of every stream, does not sort its 5 s history each time."""

    def __init__(self, size: int) -> None:
        self.order: collections.deque[float] = collections.deque()
        self.sorted: list[float] = []
        self.size = size

    def __len__(self) -> int:
        return len(self.order)

    def add(self, value: float) -> None:
        if len(self.order) == self.size:
            del self.sorted[bisect.bisect_left(self.sorted, self.order.popleft())]
        self.order.append(value)
        bisect.insort(self.sorted, value)

    def clear(self) -> None:
        self.order.clear()
        self.sorted.clear()

    def value(self, q: float) -> float:
        a = self.sorted
        k = q / 100 * (len(a) - 1)
        lo = int(k)
        hi = min(lo + 1, len(a) - 1)
        t = k - lo
        lo_v, hi_v = a[lo], a[hi]
        return hi_v - (hi_v - lo_v) * (1 - t) if t >= 0.5 else lo_v + (hi_v - lo_v) * t  # numpy's own _lerp


@dataclass
class Segment:
    audio: np.ndarray  # float32 mono at SAMPLE_RATE
    start_s: float  # from the start of the stream
    end_s: float
    index: int  # 0, 1, 2, ... in order of completion

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def span(self) -> tuple[int, float, float]:
        """(index, start_s, end_s): where it is in its stream, what a record keeps of it."""
        return self.index, self.start_s, self.end_s

    def part(self, start: int, end: int) -> Segment:
        """Samples [start, end) of this segment (a speaker's part of it), with its times and index."""
        return Segment(self.audio[start:end], self.start_s + start / SAMPLE_RATE, self.start_s + end / SAMPLE_RATE,
                       self.index)  # fmt: skip

    def by_speaker(self, parts: list) -> list[tuple[Segment, str, int]]:
        """(segment, speaker, part number) from the speaker stage's (Part, name) list
        (model/tracker.py): the whole segment as part 0 when one person spoke it, else each
        part numbered from 1."""
        if len(parts) == 1:
            return [(self, parts[0][1], 0)]
        return [(self.part(p.start, p.end), name, k + 1) for k, (p, name) in enumerate(parts)]


class Segmenter:
    def __init__(self, settings: VadSettings | None = None) -> None:
        self.s = settings or VadSettings()
        self.silero = None
        if self.s.engine == "silero":
            from .silero import CHUNK, SileroVad

            self.silero, self.frame = SileroVad(), CHUNK
        else:
            import webrtcvad

            self.vad = webrtcvad.Vad(self.s.aggressiveness)
            self.frame = SAMPLE_RATE * self.s.frame_ms // 1000  # samples per VAD frame
        frame_ms = self.s.decision_ms
        self.window = self.s.window_ms // frame_ms  # frames looked at to open a segment
        self.hangover = self.s.hangover_ms // frame_ms  # frames looked at to close it
        n_background = int(BACKGROUND_S * 1000 / frame_ms)
        self.levels = RollingPercentile(n_background)  # dBFS per frame
        self.high_levels = RollingPercentile(n_background)  # 4-8 kHz, dB
        self.taper = np.hanning(self.frame)
        self.taper_power = float(np.sum(self.taper**2))
        self.high_bins = np.fft.rfftfreq(self.frame, 1 / SAMPLE_RATE) >= HIGH_BAND_HZ
        self.keep = int(SAMPLE_RATE * (self.s.window_ms + self.s.pre_roll_ms) / 1000)  # history kept in silence
        self.reset()

    def reset(self) -> None:
        self.t = 0  # samples consumed (classified) so far
        self.pending = np.zeros(0, np.float32)  # pushed but not yet a whole frame
        # Recent audio ending at sample self.t, as a list of frames: appending a frame is O(1),
        # and the frames are joined once, when a segment closes.
        self.history: collections.deque[np.ndarray] = collections.deque()
        self.history_start = 0  # sample index of the first kept sample
        self.opening: collections.deque[tuple[int, bool]] = collections.deque(maxlen=self.window)  # (start, voiced)
        self.closing: collections.deque[bool] = collections.deque(maxlen=self.hangover)  # voiced
        self.in_speech = False
        self.seg_start = 0  # sample where the open segment starts
        self.last_voiced_end = 0  # sample after the last voiced frame
        self.count = 0
        self.level = 0.0  # RMS of the last frame, for the dashboard's input meter
        self.levels.clear()
        self.high_levels.clear()
        self.background_dbfs = SILENCE_DBFS
        if self.silero is not None:
            self.silero.reset()

    @property
    def state(self) -> str:
        return "speech" if self.in_speech else "silence"

    def push(self, chunk: np.ndarray) -> list[Segment]:
        """Feed audio; returns the segments this completed (usually none, at most a few)."""
        audio = np.concatenate([self.pending, np.asarray(chunk, np.float32).ravel()])
        n = len(audio) // self.frame * self.frame
        self.pending = audio[n:]
        if n == 0:
            return []
        # What does not depend on the frames before, for the whole chunk at once: levels,
        # the 4-8 kHz band's levels and the 16-bit samples the VAD reads.
        frames = audio[:n].reshape(-1, self.frame)
        power = np.mean(frames**2, axis=1, dtype=np.float64)
        high = None if self.silero is not None else self._high_band_power(frames)
        pcm = frames if self.silero is not None else vad_pcm(frames)
        out = []
        for k in range(len(frames)):
            seg = self._frame(frames[k], float(power[k]), None if high is None else float(high[k]), pcm[k])
            if seg is not None:
                out.append(seg)
        return out

    def open_segment(self) -> Segment | None:
        """The segment under way, from its start to the audio heard so far, with the index it
        will have when it closes; None in silence. For interim results: nothing changes."""
        if not self.in_speech or not self.history:
            return None
        kept = np.concatenate(self.history)
        audio = kept[self.seg_start - self.history_start : self.t - self.history_start]
        return Segment(audio.copy(), self.seg_start / SAMPLE_RATE, self.t / SAMPLE_RATE, self.count)

    def finish(self) -> Segment | None:
        """End of input: close the open segment, if it is long enough."""
        seg = None
        if self.in_speech:
            seg = self._close(min(self.t, self.last_voiced_end + self._ms(self.s.post_roll_ms)))
        self.in_speech = False
        return seg

    def _ms(self, ms: int) -> int:
        return SAMPLE_RATE * ms // 1000

    def _voiced(self, frame: np.ndarray, power: float, pcm: np.ndarray) -> bool:
        """WebRTC VAD's decision on the frame (`pcm`: its 16-bit samples), turned down when
        the background is loud; or Silero VAD's probability against the threshold."""
        self.level = power**0.5
        self.levels.add(max(SILENCE_DBFS, 10 * math.log10(power + 1e-12)))
        self.background_dbfs = self.levels.value(BACKGROUND_PERCENTILE)  # the dashboard shows it with either VAD
        if self.silero is not None:
            return self.silero.prob(frame) >= self.s.threshold
        excess_db = self.background_dbfs - self.s.max_background_dbfs
        if self.s.max_background_dbfs < 0 and excess_db > 0:
            pcm = vad_pcm(frame * 10 ** (-excess_db / 20))
        return self.vad.is_speech(pcm.tobytes(), SAMPLE_RATE)

    def _high_band_power(self, frames: np.ndarray) -> np.ndarray | None:
        """Each frame's 4-8 kHz power (the band's share of the mean power); None when that rule is off."""
        if self.s.high_band_db == 0:
            return None  # off: no spectrum, no history
        spectrum = np.abs(np.fft.rfft(frames * self.taper, axis=1)[:, self.high_bins]) ** 2
        return 2 * spectrum.sum(axis=1) / (self.frame * self.taper_power)

    def _high_band_loud(self, power: float | None) -> bool:
        """Whether the frame's 4-8 kHz level is `high_band_db` above that band's background."""
        if power is None:
            return False
        level = max(SILENCE_DBFS, 10 * math.log10(power + 1e-12))
        self.high_levels.add(level)
        background = max(HIGH_BAND_FLOOR_DBFS, self.high_levels.value(BACKGROUND_PERCENTILE))
        return level >= background + self.s.high_band_db

    def _frame(self, frame: np.ndarray, power: float, high_power: float | None, pcm: np.ndarray) -> Segment | None:
        voiced = self._voiced(frame, power, pcm)
        if self._high_band_loud(high_power) and self.in_speech and not voiced and self.closing[-1]:
            voiced = True  # a word ending WebRTC VAD cannot hear: continues the segment
        start = self.t
        self.t += len(frame)
        self.history.append(frame)
        self.opening.append((start, voiced))
        self.closing.append(voiced)
        if voiced:
            self.last_voiced_end = self.t
        if not self.in_speech:
            while self.history and self.t - self.history_start - len(self.history[0]) >= self.keep:
                self.history_start += len(self.history.popleft())
            n_voiced = sum(v for _, v in self.opening)
            if len(self.opening) == self.window and n_voiced >= self.s.open_ratio * self.window:
                first = next(s for s, v in self.opening if v)
                self.seg_start = max(0, first - self._ms(self.s.pre_roll_ms), self.history_start)
                self.in_speech = True
            return None
        n_unvoiced = self.closing.count(False)
        if n_unvoiced >= self.s.close_ratio * self.hangover:
            self.in_speech = False
            return self._close(min(self.t, self.last_voiced_end + self._ms(self.s.post_roll_ms)))
        if self.t + self.frame - self.seg_start > int(self.s.max_segment_s * SAMPLE_RATE):  # the next frame won't fit
            seg = self._close(self.t)  # too long: cut here, speech goes on in a new segment
            self.seg_start = self.t
            return seg
        return None

    def _close(self, end: int) -> Segment | None:
        """Cut [seg_start, end) out of the history; drop it if shorter than the minimum."""
        kept = np.concatenate(self.history) if self.history else np.zeros(0, np.float32)
        begin = self.history_start
        audio = kept[self.seg_start - begin : end - begin]
        rest = kept[end - begin :]
        self.history = collections.deque([rest] if len(rest) else [])
        self.history_start = end
        if len(audio) < int(self.s.min_segment_s * SAMPLE_RATE):
            return None
        seg = Segment(audio.copy(), self.seg_start / SAMPLE_RATE, end / SAMPLE_RATE, self.count)
        self.count += 1
        return seg
