"""How well the segmenter finds sentences in real speech: Emo-DB sentences joined with 1 s
pauses, clean or with white, pink or babble noise mixed in, against where each sentence is
audible. benchmarks/bench_vad.py prints these measurements for every condition
(docs/benchmarks.md, which also says why the reference is audibility, not the file edges);
tests/test_segmenter.py holds the segmenter to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfiltfilt

from ..model.audio import SAMPLE_RATE, read_audio
from ..streamer.audio.segmenter import Segment, VadSettings
from ..streamer.audio.stream import AudioStream
from .datasets import load_emodb

TOLERANCE_S = 0.150
FRAME = SAMPLE_RATE // 50  # 20 ms frames for the audible-speech reference
CONDITIONS = [("clean", None)] + [(kind, snr) for snr in (20, 10) for kind in ("white", "pink", "babble")]
OFFSETS = (0, 11, 22, 33)
DIGITAL_SILENCE_DBFS = -90.0  # clean reference: anything louder is part of the recording
MAX_PAUSE_S = 0.3  # programme sentences hold no inner pause this long (half the default hang-over)
PAUSE_DB = 30.0  # a pause frame: this far below the file's loud (95th percentile) frames


def longest_pause_s(clip: np.ndarray) -> float:
    """The longest run of quiet 20 ms frames between a clip's first and last loud ones."""
    n = len(clip) // FRAME * FRAME
    db = 10 * np.log10(np.mean(speech_band(clip)[:n].reshape(-1, FRAME) ** 2, axis=1) + 1e-20)
    quiet = db < np.percentile(db, 95) - PAUSE_DB
    loud = np.flatnonzero(~quiet)
    longest = run = 0
    for q in quiet[loud[0] : loud[-1] + 1]:
        run = run + 1 if q else 0
        longest = max(longest, run)
    return longest * FRAME / SAMPLE_RATE


def programme_files(emodb: Path, offset: int = 0) -> tuple[list[Path], list[Path]]:
    """A programme's twelve files and eight others for babble.

    Every 45th file of labels.csv from `offset`; one with an inner pause of MAX_PAUSE_S or
    more is replaced by the next file that has none.
    """
    files = [it.path for it in load_emodb(emodb).items]
    chosen = []
    for i in range(offset, offset + 12 * 45, 45):
        while longest_pause_s(read_audio(files[i % len(files)])) >= MAX_PAUSE_S:
            i += 1
        chosen.append(files[i % len(files)])
    return chosen, files[1::45][:8]


def join_clips(clips: list[np.ndarray], gap_s: float = 1.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips between pauses of digital silence, and each clip's span in seconds."""
    gap = np.zeros(round(gap_s * SAMPLE_RATE), np.float32)
    parts, spans, t = [gap], [], gap_s
    for c in clips:
        parts += [c, gap]
        spans.append((t, t + len(c) / SAMPLE_RATE))
        t += len(c) / SAMPLE_RATE + gap_s
    return np.concatenate(parts), spans


def make_noise(kind: str, n: int, power: float, rng: np.random.Generator, talkers: list[np.ndarray] = ()) -> np.ndarray:
    """`n` samples of white, pink or babble noise scaled to mean power `power`."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":  # 1/f: shape white noise's spectrum by 1/sqrt(f)
        spec = np.fft.rfft(rng.standard_normal(n))
        spec[1:] /= np.sqrt(np.arange(1, len(spec)))
        spec[0] = 0
        x = np.fft.irfft(spec, n)
    elif kind == "babble":
        x = np.zeros(n)
        for talker in talkers:
            looped = np.tile(talker, n // len(talker) + 2)
            start = rng.integers(len(talker))
            x += looped[start : start + n]
    else:
        raise ValueError(f"unknown noise {kind!r}")
    return (x * np.sqrt(power / np.mean(x**2))).astype(np.float32)


def speech_band(x: np.ndarray) -> np.ndarray:
    """`x` without what lies below 80 Hz (rumble and breath pops, not speech; WebRTC VAD's
    lowest band starts there too). Zero-phase, so frames stay where they were."""
    return sosfiltfilt(butter(4, 80, "highpass", fs=SAMPLE_RATE, output="sos"), x)


def audible_spans(clips: list[np.ndarray], spans: list[tuple[float, float]], noise: np.ndarray | None):
    """Per clip: from the first to the last 20 ms frame whose power in the speech band is at
    least the noise's mean power in that band (no noise: above digital silence)."""
    noise_power = None if noise is None else float(np.mean(speech_band(noise) ** 2))
    out = []
    for c, (t0, _) in zip(clips, spans):
        n = len(c) // FRAME * FRAME
        power = np.mean(speech_band(c)[:n].reshape(-1, FRAME) ** 2, axis=1)
        floor = 10 ** (DIGITAL_SILENCE_DBFS / 10) if noise_power is None else noise_power
        loud = np.flatnonzero(power >= floor)
        out.append((t0 + loud[0] * FRAME / SAMPLE_RATE, t0 + (loud[-1] + 1) * FRAME / SAMPLE_RATE))
    return out


def segment(audio: np.ndarray, settings: VadSettings | None = None, chunk: int = 1234) -> list[Segment]:
    """The segmenter over `audio` in odd-sized chunks, as a sound card delivers them."""
    return [c.segment for c in AudioStream(settings or VadSettings()).cut_all(audio, chunk)]


def boundary_errors(segs: list[Segment], spans: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """(start, end) error in seconds per clip, or None when the segments are not one per clip."""
    if len(segs) != len(spans):
        return None
    return [(s.start_s - a, s.end_s - b) for s, (a, b) in zip(segs, spans)]


def summary(errors: list[tuple[float, float]] | None) -> dict:
    if errors is None:
        return dict(one_per_clip=False)
    flat = [abs(float(e)) for pair in errors for e in pair]
    return dict(
        one_per_clip=True,
        within=sum(e <= TOLERANCE_S for e in flat),  # plain ints and floats for JSON
        of=len(flat),
        worst_s=round(max(flat), 3),
        misses=[f"clip {i}: start {a:+.2f}, end {b:+.2f}" for i, (a, b) in enumerate(errors)
                if max(abs(a), abs(b)) > TOLERANCE_S],
    )  # fmt: skip
