"""VAD segmenter on real speech: Emo-DB clips joined with 1 s pauses, clean and in noise."""

from __future__ import annotations

import numpy as np
import pytest

from model.audio import SAMPLE_RATE
from model.specs import VadSettings
from streamer.segmenter import Segmenter
from tests.conftest import load_clip

TOLERANCE_S = 0.150


@pytest.fixture(scope="module")
def programme(emodb_rows):
    """Twelve clips (different speakers and emotions) between 1 s pauses, and their true spans."""
    clips = [load_clip(r["file"].split("/")[-1]) for r in emodb_rows[::45]]
    gap = np.zeros(SAMPLE_RATE, np.float32)
    parts, spans, t = [gap], [], 1.0
    for c in clips:
        parts += [c, gap]
        spans.append((t, t + len(c) / SAMPLE_RATE))
        t += len(c) / SAMPLE_RATE + 1.0
    audio = np.concatenate(parts)
    return audio, spans, float(np.mean(np.concatenate(clips) ** 2))


def run(audio: np.ndarray, settings: VadSettings | None = None, chunk: int = 1234):
    seg = Segmenter(settings)
    out = []
    for i in range(0, len(audio), chunk):  # odd-sized chunks, as a sound card delivers them
        out += seg.push(audio[i : i + chunk])
    last = seg.finish()
    return out + ([last] if last else [])


def test_one_segment_per_clip_with_tight_boundaries(programme) -> None:
    audio, spans, _ = programme
    segs = run(audio)
    assert len(segs) == len(spans)
    for s, (a, b) in zip(segs, spans):
        assert abs(s.start_s - a) <= TOLERANCE_S and abs(s.end_s - b) <= TOLERANCE_S
        assert len(s.audio) == round((s.end_s - s.start_s) * SAMPLE_RATE)
    assert [s.index for s in segs] == list(range(len(spans)))


def test_noise_at_20_db_snr(programme) -> None:
    audio, spans, power = programme
    noise = np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32) * np.sqrt(power / 100)
    segs = run(audio + noise)
    assert len(segs) == len(spans)
    assert all(abs(s.start_s - a) <= TOLERANCE_S for s, (a, _) in zip(segs, spans))
    # Known gap: in white noise the VAD loses the soft last syllables of some cut-off
    # sentences, ending up to 0.55 s early; most ends stay within the tolerance.
    ends = [abs(s.end_s - b) <= TOLERANCE_S for s, (_, b) in zip(segs, spans)]
    assert sum(ends) >= 9


def test_segment_audio_is_the_input_audio(programme) -> None:
    audio, _, _ = programme
    for s in run(audio)[:3]:
        i = round(s.start_s * SAMPLE_RATE)
        np.testing.assert_array_equal(s.audio, audio[i : i + len(s.audio)])


def test_long_speech_is_split_at_the_maximum(programme) -> None:
    audio, spans, _ = programme
    speech = np.concatenate([audio[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)] for a, b in spans[:4]])
    segs = run(speech, VadSettings(max_segment_s=3.0))
    assert len(segs) >= 2 and all(s.duration_s <= 3.0 + 1e-9 for s in segs)
    assert all(b.start_s == pytest.approx(a.end_s) for a, b in zip(segs, segs[1:]) if a.duration_s >= 3.0 - 1e-9)


def test_clicks_shorter_than_the_minimum_are_dropped(programme) -> None:
    audio, spans, _ = programme
    a, _ = spans[0]
    blip = audio[round(a * SAMPLE_RATE) : round((a + 0.4) * SAMPLE_RATE)]
    quiet = np.zeros(SAMPLE_RATE, np.float32)
    assert run(np.concatenate([quiet, blip, quiet]), VadSettings(min_segment_s=0.8)) == []


def test_silence_gives_nothing_and_state_follows_speech(programme) -> None:
    assert run(np.zeros(3 * SAMPLE_RATE, np.float32)) == []
    audio, spans, _ = programme
    seg = Segmenter()
    seg.push(audio[: round((spans[0][0] + 1.0) * SAMPLE_RATE)])
    assert seg.state == "speech" and seg.level > 0


@pytest.mark.parametrize("bad", [dict(frame_ms=25), dict(aggressiveness=4), dict(min_segment_s=0.1)])
def test_settings_are_checked(bad: dict) -> None:
    with pytest.raises(ValueError):
        VadSettings(**bad)
