"""Dashboard: pure rendering of a snapshot, fed with real predictions, on a fixed-width console."""

from __future__ import annotations

import pytest
import soundfile as sf
from rich.console import Console
from support.data import SAMPLE

from emomon.model.audio import SAMPLE_RATE
from emomon.model.predictor import Predictor
from emomon.streamer.audio.segmenter import Segment
from emomon.streamer.monitor.dashboard import Header, MonitorState, fit, render, spark
from emomon.streamer.outputs.record import Job, Result, Row


def add(state: MonitorState, result: Result) -> None:
    """A result scored here, as the outputs hand it to the dashboard."""
    state.add(Row.of(result), result.prediction)


def fed_state(predictor: Predictor) -> MonitorState:
    audio, _ = sf.read(SAMPLE, dtype="float32")
    predictor.reset_session()  # the default adapts to the session: each state from the same start
    state = MonitorState(predictor.emotions, header=Header("pulse (44100 Hz)", **predictor.describe()))
    for i in range(3):  # neutral, anger, sadness
        a, b = 1 + 3 * i, 3 + 3 * i
        seg = Segment(audio[a * SAMPLE_RATE : b * SAMPLE_RATE], a, b, i)
        (p,) = predictor.predict([seg.audio])
        add(state, Result(Job("sample", seg), "ok", p, latency_ms=40.0 + 10 * i, queue_ms=1.0))
    add(state, Result(Job("sample", Segment(audio[:8000], 20.0, 20.5, 3)), "dropped", error="queue full"))
    state.set_input("speech", 0.05, 2, -47.0, lost=3)
    return state


def screen(state: MonitorState, width: int = 100) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(render(state.snapshot(), width))
    return console.export_text()


@pytest.mark.weights
def test_screen_shows_the_latest_segment_trend_and_stats(default_predictor) -> None:
    text = screen(fed_state(default_predictor))
    snap = fed_state(default_predictor).snapshot()
    assert "emotion shares  #2  7.00-9.00 s" in text
    for e in snap.emotions:
        assert e in text
    top = max(snap.latest, key=snap.latest.get)
    assert top == "sadness" and f"{snap.latest[top]:.2f}" in text
    assert "VAD speech" in text
    assert "attention" not in text  # the pooled default model has no attention weights to show
    with_attention = fed_state(default_predictor)
    with_attention.attention = [0.1, 0.6, 0.3]  # as an Architecture-2 model's latest segment leaves it
    assert "attention " + spark([0.1, 0.6, 0.3]) in screen(with_attention)
    # 0.05 RMS is -26 dBFS: 11 of 20 blocks on the meter's -60 .. 0 dBFS scale
    assert f"input {'█' * 11:<20}  -26 dBFS   background  -47 dBFS   input lost 3 blocks" in text
    replayed = fed_state(default_predictor)
    replayed.set_input("silence", 0.0, 0)  # a file source loses nothing: no such count
    assert "input lost" not in screen(replayed)
    assert "segments 3   dropped 1   failed 0   interim 0   queue 2   latency p50 50 ms p95 59 ms" in text
    assert "dropped" in text.split("recent segments")[1]


@pytest.mark.weights
def test_render_is_pure_and_fits_the_width(default_predictor) -> None:
    state = fed_state(default_predictor)
    snap = state.snapshot()
    a, b = screen(state, 80), screen(state, 80)
    assert a == b
    assert max(len(line) for line in a.splitlines()) <= 80
    assert snap.trend[-1] != snap.trend[0]  # the trend moves with the segments


def test_empty_state_renders() -> None:
    text = screen(MonitorState(("a", "b")))
    assert "waiting for speech" in text and "latency p50 -" in text


def test_a_network_streams_state_shows_beside_its_name() -> None:
    state = MonitorState(("a", "b"), header=Header("live.mp3"))
    state.set_source_state("http://radio.example/live.mp3", "reconnecting: lost at 7.5 s")
    assert "live.mp3 (reconnecting: lost at 7.5 s)" in screen(state)
    state.set_input("speech", 0.1, 0, source="http://radio.example/live.mp3")  # a block: the state stays
    state.set_source_state("http://radio.example/live.mp3", "live, reconnected 1x")
    assert "live.mp3 (live, reconnected 1x)" in screen(state)


def test_spark_and_fit() -> None:
    assert spark([0.0, 0.5, 1.0], 0.0, 1.0) == "▁▅█"
    assert fit(list(range(10)), 5) == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert fit([1.0, 2.0], 5) == [1.0, 2.0]


@pytest.mark.weights
def test_queue_count_can_be_set_on_its_own(default_predictor) -> None:
    state = fed_state(default_predictor)  # the source loop last saw 2 waiting
    state.set_queue(0)  # the pipeline after draining the worker
    assert "queue 0" in screen(state)


@pytest.mark.weights
def test_header_names_input_model_compute_and_elapsed_time(default_predictor) -> None:
    state = fed_state(default_predictor)
    state.started -= 3725  # an hour, two minutes and five seconds ago
    first = screen(state).splitlines()[0]
    dtype = default_predictor.describe()["dtype"]  # what auto picks on this CPU
    assert first.rstrip() == f"pulse (44100 Hz) · default (whisper-base, 9 emotions) · cpu {dtype} · 1:02:05"


@pytest.mark.weights
def test_trend_uses_the_width_the_terminal_has(default_predictor) -> None:
    state = fed_state(default_predictor)
    for _ in range(200):  # a long session: more trend points than any screen shows
        state.trend.append(state.trend[-1])

    def trend_columns(width: int) -> int:
        line = next(x for x in screen(state, width).splitlines() if x.strip("│ ").startswith("sadness"))
        return max(len(run) for run in line.replace(" ", "|").split("|") if set(run) <= set("▁▂▃▄▅▆▇█"))

    narrow, wide = trend_columns(100), trend_columns(180)
    assert wide - narrow == 80  # every extra column shows one more segment
    assert max(len(x) for x in screen(state, 180).splitlines()) <= 180


@pytest.mark.weights
def test_interim_result_shows_in_the_bars_not_in_the_counts(default_predictor) -> None:
    state = fed_state(default_predictor)
    audio, _ = sf.read(SAMPLE, dtype="float32")
    seg = Segment(audio[4 * SAMPLE_RATE : 9 * SAMPLE_RATE], 4.0, 9.0, 3)
    (p,) = default_predictor.predict([seg.audio])
    add(state, Result(Job("sample", seg, interim=True), "ok", p, latency_ms=30.0))
    text = screen(state)
    assert "#3  4.00-9.00 s  (interim, still talking)" in text
    assert "segments 3   dropped 1   failed 0   interim 1" in text
    assert len(state.snapshot().trend) == 3  # the trend follows final segments only


@pytest.mark.weights
def test_a_row_per_speaker_beside_the_overall_view(default_predictor) -> None:
    audio, _ = sf.read(SAMPLE, dtype="float32")
    predictor = default_predictor
    predictor.reset_session()  # the default adapts to the session: each state from the same start
    state = MonitorState(predictor.emotions)
    for i, who in enumerate(["speaker 1", "agent", "speaker 1"]):  # neutral, anger, sadness
        a, b = 1 + 3 * i, 3 + 3 * i
        seg = Segment(audio[a * SAMPLE_RATE : b * SAMPLE_RATE], a, b, i)
        (p,) = predictor.predict([seg.audio])
        add(state, Result(Job("sample", seg, speaker=who), "ok", p, latency_ms=40.0, queue_ms=1.0))
    snap = state.snapshot()
    assert [(r.name, r.segments, r.seconds) for r in snap.speakers] == [("speaker 1", 2, 4.0), ("agent", 1, 2.0)]
    text = screen(state)
    assert "speakers" in text and "spoken" in text
    for row in snap.speakers:
        top = max(row.latest, key=row.latest.get)
        words = [*row.name.split(), top, f"{row.latest[top]:.2f}", f"{row.seconds:.0f}", "s"]
        assert any(line.strip("│ ").split()[: len(words)] == words for line in text.splitlines()), row.name
    assert "speaker" in text.split("recent segments")[1].splitlines()[1]  # a speaker column in the recent list
    assert "spoken" not in screen(fed_state(default_predictor))  # no speakers tracked: no such panel
