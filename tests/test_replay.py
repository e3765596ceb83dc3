"""Replay end to end with the shipped default model, and the worker's queue policies."""

from __future__ import annotations

import csv
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SAMPLE

from emomon.cli import main
from emomon.model.audio import SAMPLE_RATE
from emomon.model.bundle import DEFAULT_BUNDLE
from emomon.model.predictor import Predictor
from emomon.streamer.audio.segmenter import Segment
from emomon.streamer.audio.sources import file_blocks
from emomon.streamer.monitor.worker import InferenceWorker
from emomon.streamer.outputs.record import Job, Result

EMOTIONS = ("neutral", "anger", "sadness", "happiness", "boredom", "fear")  # the sample's clips, in order


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.weights
def test_replay_the_bundled_sample_to_csv(tmp_path: Path, capsys) -> None:
    out = tmp_path / "log.csv"
    assert main(["replay", str(SAMPLE), "--speed", "0", "--csv", str(out), "--no-dashboard"]) == 0
    logged = rows(out)
    assert len(logged) == 6 and all(r["status"] == "ok" for r in logged)
    starts = [float(r["start_s"]) for r in logged]
    assert all(abs(s - (1.0 + 3.0 * i)) <= 0.15 for i, s in enumerate(starts))  # 1 s pause, 2 s clip
    tops = [r["top_emotion"] for r in logged]
    assert sum(t == e for t, e in zip(tops, EMOTIONS)) >= 3  # the default model heard this speaker in training
    printed = capsys.readouterr().out
    assert "emodb_speaker11.wav #1" in printed and "6 segment(s) from 1 file(s)" in printed


@pytest.mark.weights
def test_real_time_replay_takes_real_time(tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    audio, rate = sf.read(SAMPLE, dtype="float32")
    sf.write(short, audio[: 4 * rate], rate)
    t = time.perf_counter()
    assert main(["replay", str(short), "--speed", "2", "--csv", str(tmp_path / "l.csv")]) == 0
    assert time.perf_counter() - t >= 2.0 * 0.9  # 4 s of audio at 2x
    assert len(rows(tmp_path / "l.csv")) == 1


@pytest.mark.weights
def test_a_folder_with_bad_files_goes_on_and_fails_at_the_end(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "a.wav")
    (folder / "notes.txt").write_text("not audio")
    sf.write(folder / "b.flac", sf.read(SAMPLE, dtype="float32")[0][: 5 * SAMPLE_RATE], SAMPLE_RATE)
    (folder / "c.wav").write_bytes(b"RIFF" + b"\x00" * 40)  # a corrupt header
    out = tmp_path / "log.csv"
    code = main(["replay", str(folder), str(tmp_path / "missing.wav"), "--speed", "0", "--csv", str(out)])
    assert code == 1
    printed = capsys.readouterr().out
    assert "notes.txt: not an audio file libsndfile reads" in printed
    assert "missing.wav: does not exist" in printed
    assert "Traceback" not in printed
    sources = {Path(r["source"]).name for r in rows(out)}
    assert sources == {"a.wav", "b.flac"}


def test_file_blocks_resample_in_constant_size_pieces(tmp_path: Path) -> None:
    stereo = tmp_path / "s.wav"
    t = np.arange(44100 * 3) / 44100
    sf.write(stereo, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1).astype(np.float32), 44100)
    blocks = list(file_blocks(stereo, block_s=0.5))
    total = sum(len(b) for b in blocks)
    assert abs(total - 3 * SAMPLE_RATE) <= 2 and max(len(b) for b in blocks) <= 0.6 * SAMPLE_RATE


def _segments(n: int) -> list[Segment]:
    audio, _ = sf.read(SAMPLE, dtype="float32")
    return [
        Segment(audio[(1 + 3 * i) * SAMPLE_RATE : (3 + 3 * i) * SAMPLE_RATE], 1.0 + 3 * i, 3.0 + 3 * i, i)
        for i in range(n)
    ]


class SlowPredictor:
    """The real default Predictor, held back so that the queue fills up."""

    def __init__(self, gate: threading.Event) -> None:
        self.inner = Predictor.from_bundle(DEFAULT_BUNDLE, device="cpu")
        self.gate = gate

    def use_session(self, key: str) -> None:
        self.inner.use_session(key)

    def predict(self, segments):
        self.gate.wait(10)
        return self.inner.predict(segments)


@pytest.mark.weights
def test_live_policy_drops_the_oldest_and_reports_it() -> None:
    gate, results = threading.Event(), []
    worker = InferenceWorker(SlowPredictor(gate), results.append, queue_size=2, max_batch=1, drop_oldest=True).start()
    segs = _segments(6)
    for s in segs:
        worker.submit(Job("mic", s))
        time.sleep(0.05)  # the worker takes the first and blocks on the gate; the rest queue up
    gate.set()
    worker.close()
    status = {r.job.segment.index: r.status for r in results}
    assert sorted(status) == list(range(6))  # every segment accounted for
    assert worker.dropped == list(status.values()).count("dropped") >= 2
    assert status[5] == "ok" and status[0] == "ok"  # the newest is kept, the oldest waiting ones go


def test_a_worker_keeps_nothing_of_ended_streams() -> None:
    """emomon serve ends a stream with forget(): 10,000 short streams later the worker holds
    no more memory than after the first thousand (it used to keep a key per stream)."""
    import tracemalloc

    worker = InferenceWorker(object(), lambda r: None, queue_size=4)  # not started: nothing is scored
    seg = _segments(1)[0]

    def streams(first: int, n: int) -> None:
        for i in range(first, first + n):
            worker.submit_interim(Job(f"stream {i}", seg, interim=True))
            worker.submit(Job(f"stream {i}", seg))
            worker.queue.get_nowait()  # as the worker thread would take it
            worker.forget(f"stream {i}")

    streams(0, 1000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    streams(1000, 10_000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 100_000, grown


@pytest.mark.weights
def test_replay_policy_blocks_and_drops_nothing() -> None:
    gate, results = threading.Event(), []
    worker = InferenceWorker(SlowPredictor(gate), results.append, queue_size=1, max_batch=4).start()
    threading.Timer(0.3, gate.set).start()
    for s in _segments(5):
        worker.submit(Job("file.wav", s))  # blocks while the queue is full
    worker.close()
    assert [r.status for r in results] == ["ok"] * 5 and worker.dropped == 0
    assert all(isinstance(r, Result) and r.latency_ms >= r.queue_ms >= 0 for r in results)
