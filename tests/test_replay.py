"""Replay end to end with the shipped default model (the worker's own tests: tests/test_worker.py)."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.data import SAMPLE

from emomon.cli import main
from emomon.model.audio import SAMPLE_RATE
from emomon.streamer.audio.sources import FileSource
from emomon.streamer.audio.stream import Resampler

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
    assert "notes.txt" not in printed  # a folder's audio files are those named like audio, as in batch
    assert "c.wav' cannot be read as audio" in printed
    assert "missing.wav: does not exist" in printed
    assert "Traceback" not in printed
    sources = {Path(r["source"]).name for r in rows(out)}
    assert sources == {"a.wav", "b.flac"}


def test_a_file_streams_in_constant_size_blocks_at_its_rate_and_resamples_in_the_stream(tmp_path: Path) -> None:
    stereo = tmp_path / "s.wav"
    t = np.arange(44100 * 3) / 44100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    sf.write(stereo, np.stack([tone, -tone], 1), 44100, subtype="FLOAT")
    source = FileSource(stereo, block_s=0.5)
    blocks = list(source.blocks())
    assert source.rate == 44100 and [len(b) for b in blocks] == [22050] * 6
    assert all(b.ndim == 1 and np.abs(b).max() < 1e-6 for b in blocks)  # mono: the channels averaged
    both = list(FileSource(stereo, block_s=0.5, each=True).blocks())
    assert both[0].shape == (22050, 2) and np.allclose(np.concatenate(both)[:, 0], tone, atol=1e-4)
    resampler = Resampler(source.rate, 2, each=True)
    total = sum(len(resampler.push(b)) for b in both) + len(resampler.finish())
    assert abs(total - 3 * SAMPLE_RATE) <= 2
