"""The streaming core (streamer/audio/stream.py): push(block) -> cuts, finish(), on the
bundled sample (six sentences, 1 s pauses), at any block size, any rate, by channel."""

from __future__ import annotations

import numpy as np
import soxr
from support.data import SAMPLE

from emomon.model.audio import SAMPLE_RATE, read_audio
from emomon.streamer.audio.segmenter import Segmenter, VadSettings
from emomon.streamer.audio.stream import AudioStream
from emomon.streamer.monitor.replay import paced


def spans(cuts) -> list[tuple[float, float]]:
    return [(round(c.segment.start_s, 2), round(c.segment.end_s, 2)) for c in cuts if not c.interim]


def test_cuts_equal_the_segmenters_at_any_block_size() -> None:
    audio = read_audio(SAMPLE)
    seg = Segmenter(VadSettings())
    expected = seg.push(audio) + [seg.finish()]
    expected = [(round(s.start_s, 2), round(s.end_s, 2)) for s in expected if s is not None]
    assert len(expected) == 6
    for block in (160, 4000, 8000, 77_777):
        cuts = AudioStream(VadSettings()).cut_all(audio, block)
        assert spans(cuts) == expected
        assert {c.channel for c in cuts} == {None}
        assert [c.segment.index for c in cuts] == list(range(len(expected)))


def test_another_rate_is_resampled_and_cuts_at_the_same_times() -> None:
    audio = read_audio(SAMPLE)
    at_16k = spans(AudioStream(VadSettings()).cut_all(audio, 8000))
    at_48k = soxr.resample(audio, SAMPLE_RATE, 48_000).astype(np.float32)
    cuts = AudioStream(VadSettings(), rate=48_000).cut_all(at_48k, 24_000)
    assert len(spans(cuts)) == len(at_16k)
    assert np.allclose(spans(cuts), at_16k, atol=0.04)  # resampling shifts a frame decision at most
    total = sum(len(c.segment.audio) for c in cuts)
    assert abs(total / SAMPLE_RATE - sum(b - a for a, b in at_16k)) < 0.1  # segments carry 16 kHz audio


def test_by_channel_each_channel_is_its_own_stream() -> None:
    audio = read_audio(SAMPLE)
    quiet = np.zeros_like(audio)
    both = np.stack([audio, quiet], axis=1)  # the speaker on channel 0, nothing on channel 1
    cuts = AudioStream(VadSettings(), each=True).cut_all(both, 8000)
    assert {c.channel for c in cuts} == {0}
    assert spans(cuts) == spans(AudioStream(VadSettings()).cut_all(audio, 8000))
    swapped = AudioStream(VadSettings(), each=True).cut_all(both[:, ::-1].copy(), 8000)
    assert {c.channel for c in swapped} == {1}


def test_interim_cuts_come_every_interim_s_of_an_open_segment() -> None:
    audio = read_audio(SAMPLE)
    cuts = AudioStream(VadSettings(), interim_s=0.5).cut_all(audio, 1600)
    finals = [c for c in cuts if not c.interim]
    interims = [c for c in cuts if c.interim]
    assert len(finals) == 6 and interims
    for c in interims:  # the audio so far of the segment that closes next, from its start
        final = next(f for f in finals if f.segment.index == c.segment.index)
        assert c.segment.start_s == final.segment.start_s
        n = min(len(c.segment.audio), len(final.segment.audio))
        assert np.array_equal(c.segment.audio[:n], final.segment.audio[:n])
    for f in finals:  # at 0.5 s, 1.0 s, ... of the open segment (to a 0.1 s block + a 30 ms frame)
        grown = [c.segment.duration_s for c in interims if c.segment.index == f.segment.index]
        assert len(grown) >= int(f.segment.duration_s / 0.5)
        assert all(0.5 * (k + 1) <= d < 0.5 * (k + 1) + 0.13 for k, d in enumerate(grown))
    assert not [c for c in AudioStream(VadSettings()).cut_all(audio, 1600) if c.interim]  # off by default


def test_paced_blocks_arrive_in_real_time_at_speed(monkeypatch) -> None:
    """paced() waits until each block would have been recorded (at `speed` x real time), and
    never at 0: what it asks time.sleep for, counted without sleeping."""
    import time

    asked: list[float] = []
    monkeypatch.setattr(time, "sleep", asked.append)
    blocks = [np.zeros(1600, np.float32)] * 5  # 0.5 s
    assert len(list(paced(blocks, 2.0, SAMPLE_RATE))) == 5
    # time stands still here: each block waits for its own end, 0.05 s further; the last for 0.5 s at 2x
    assert len(asked) == 5 and asked == sorted(asked) and 0.2 <= asked[-1] <= 0.25
    asked.clear()
    assert len(list(paced(blocks, 0.0, SAMPLE_RATE))) == 5 and asked == []
