"""Every recording people have (issue 41): files libsndfile does not read, the audio of a
video, standard input and raw PCM, through FFmpeg (PyAV, model/media.py) and the sources
(streamer/audio/sources.py). The compressed files are written here by PyAV's own encoders
(tests/support/media.py) from the bundled sample; the network tests are in
tests/test_streams.py."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.data import REPO, SAMPLE
from support.media import encode

from emomon.model.audio import SAMPLE_RATE, read_audio, to_pcm16
from emomon.model.errors import AudioError
from emomon.streamer.audio.sources import FileSource, MediaSource, RawFormat, RawSource, open_source

CLI = [sys.executable, "-m", "emomon.cli"]
CODECS = ("m4a", "webm", "mp3", "mp4")  # AAC, Opus (48 kHz), MP3, AAC beside a video track
# the largest share difference from the WAV's rows allowed, per codec: what each codec's loss
# moves (measured on this sample, docs/cli.md: AAC 64 kb/s 0.016, Opus 32 kb/s 0.056, MP3
# 64 kb/s 0.095; the audio's RMS error 0.004, 0.015 and 0.010 against the sample's 0.1)
LOSS = {"m4a": 0.04, "webm": 0.09, "mp3": 0.13, "mp4": 0.04}


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return read_audio(SAMPLE)


@pytest.fixture(scope="module")
def encoded(sample: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("encoded")
    return {name: encode(sample, SAMPLE_RATE, folder / f"sample.{name}", name) for name in CODECS}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def replay(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "replay", *args, "--speed", "0", "--no-dashboard"], cwd=cwd, capture_output=True,
                          text=True, timeout=300, **kw)  # fmt: skip


# ------------------------------------------------------------------ the sources (fast tier)


def test_each_format_decodes_to_the_samples_audio(sample: np.ndarray, encoded: dict[str, Path]) -> None:
    """Every codec's file gives the sample's length at its own rate (Opus: 48 kHz) and the
    same audio within the codec's loss, found at the lag where the two agree best."""
    for name, path in encoded.items():
        source = open_source(path)
        assert isinstance(source, MediaSource if name != "mp3" else FileSource), name  # libsndfile reads MP3
        rate = 48000 if name == "webm" else SAMPLE_RATE
        audio = np.concatenate(list(source.blocks()))
        assert source.rate == rate and abs(len(audio) / rate - len(sample) / SAMPLE_RATE) < 0.02, name
        assert source.duration_s == pytest.approx(19.0, abs=0.02)
        back = read_audio(path)  # the Python API: any file, at 16 kHz
        n = len(sample) - 4000
        err = min(float(np.sqrt(np.mean((back[2000 + k : n + k] - sample[2000:n]) ** 2))) for k in range(-400, 401))
        assert err < 0.02, (name, err)  # RMS error; the sample's own RMS is 0.1


def test_blocks_are_constant_in_size_and_each_channel_can_be_its_own(tmp_path: Path, sample: np.ndarray) -> None:
    stereo = np.stack([sample, 0.5 * sample], axis=1)
    path = tmp_path / "two.mka"
    import av

    with av.open(str(path), "w") as box:
        s = box.add_stream("flac", rate=SAMPLE_RATE, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo.T, np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        convert = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE, frame_size=4096)
        for part in [*convert.resample(frame), *convert.resample(None)]:
            box.mux(s.encode(part))
        box.mux(s.encode(None))
    mixed = list(MediaSource(path, block_s=0.5).blocks())
    assert {len(b) for b in mixed[:-1]} == {8000} and all(b.ndim == 1 for b in mixed)  # 0.5 s at 16 kHz
    each = np.concatenate(list(MediaSource(path, each=True).blocks()))
    assert each.shape == (len(sample), 2)
    assert np.abs(each[:, 1] - 0.5 * each[:, 0]).max() < 1e-3 and np.abs(each[:, 0] - sample).max() < 1e-3


def test_raw_pcm_is_the_wavs_samples(tmp_path: Path, sample: np.ndarray) -> None:
    pcm = tmp_path / "x.s16"
    pcm.write_bytes(to_pcm16(np.stack([sample, -sample], axis=1)).tobytes())
    with pcm.open("rb") as pipe:
        blocks = list(RawSource(RawFormat("s16le", SAMPLE_RATE, 2), pipe=pipe, each=True).blocks())
    got = np.concatenate(blocks)
    assert got.shape == (len(sample), 2) and np.abs(got[:, 0] - sample).max() <= 1 / 32768
    f32 = tmp_path / "x.f32"
    f32.write_bytes(sample.astype("<f4").tobytes()[:-2])  # a last sample cut in half is left out
    with f32.open("rb") as pipe:
        got = np.concatenate(list(RawSource(RawFormat("f32le", SAMPLE_RATE, 1), pipe=pipe).blocks()))
    assert np.array_equal(got, sample[:-1])


def test_bad_inputs_are_one_sentence(tmp_path: Path, sample: np.ndarray, encoded: dict[str, Path]) -> None:
    silent = tmp_path / "silent.mp4"
    import av

    with av.open(str(silent), "w") as box:  # a video with no audio track
        v = box.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            image.pts = i
            box.mux(v.encode(image))
        box.mux(v.encode(None))
    notes = tmp_path / "notes.m4a"
    notes.write_text("not audio at all")
    cases = {
        silent: r"has no audio stream \(it holds video only\)\.",
        notes: r"cannot be read as audio by FFmpeg \(Invalid data",
        tmp_path / "gone.m4a": r"does not exist\.",
    }
    for path, message in cases.items():
        with pytest.raises(AudioError, match=message):
            open_source(path)
    with pytest.raises(AudioError, match=r"has 1 audio stream\(s\); --stream 2 is not one"):
        open_source(encoded["m4a"], stream=2)
    with pytest.raises(AudioError, match="raw PCM on standard input"):
        open_source(encoded["m4a"], raw=RawFormat())
    with pytest.raises(AudioError, match="Raw format 's24le' is not one of s16le, f32le"):
        RawFormat("s24le")


def test_a_truncated_file_says_the_time_it_reached(tmp_path: Path, sample: np.ndarray) -> None:
    """An MP4 whose index comes first ("faststart", as streaming writers put it), cut in
    half: what was decoded is given, then one sentence with the time reached."""
    whole = encode(sample, SAMPLE_RATE, tmp_path / "whole.mp4", "mp4", faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    source = open_source(cut)
    got = []
    with pytest.raises(AudioError, match=r"'.*cut\.mp4' broke off after (\d+\.\d) s \(") as e:
        got.extend(source.blocks())
    reached = float(e.value.args[0].split("broke off after ")[1].split(" s")[0])
    assert 5 < reached < 15 and abs(sum(map(len, got)) / SAMPLE_RATE - reached) < 0.6


def test_a_name_that_is_not_utf8_opens_through_ffmpeg(tmp_path: Path, encoded: dict[str, Path]) -> None:
    import os

    odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"call-\xff.m4a"))
    Path(odd).write_bytes(encoded["m4a"].read_bytes())
    source = open_source(odd)
    assert source.rate == SAMPLE_RATE and sum(map(len, source.blocks())) > 18 * SAMPLE_RATE


# ------------------------------------------------------------------ replay with the model


@pytest.fixture(scope="module")
def replayed(encoded: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """One `emomon replay` of the WAV and every encoded copy (each input its own stream and
    session, as in a run of its own): the rows of each, by format."""
    folder = tmp_path_factory.mktemp("replayed")
    out = replay([str(SAMPLE), *map(str, encoded.values()), "--csv", "all.csv"], folder)
    assert out.returncode == 0, out.stderr
    assert f"{6 * (1 + len(encoded))} segment(s) from {1 + len(encoded)} file(s)" in out.stdout
    names = {str(SAMPLE): "wav", **{str(p): name for name, p in encoded.items()}}
    by: dict[str, list[dict[str, str]]] = {}
    for r in rows(folder / "all.csv"):
        by.setdefault(names[r["source"]], []).append(r)
    return by


def same_segments(got: list[dict[str, str]], want: list[dict[str, str]], loss: float) -> float:
    """The same six segments within 60 ms, the same top emotion where the WAV's is clear
    (its top share leads the next by 0.1), shares within `loss`; the largest difference."""
    assert len(got) == len(want) == 6 and all(r["status"] == "ok" for r in got)
    emotions = [k for k in want[0] if k in got[0] and k not in ("start_s", "end_s") and _share(want[0], k)]
    worst = 0.0
    for g, w in zip(got, want):
        assert abs(float(g["start_s"]) - float(w["start_s"])) <= 0.06
        assert abs(float(g["end_s"]) - float(w["end_s"])) <= 0.06
        shares = sorted((float(w[e]) for e in emotions), reverse=True)
        if shares[0] - shares[1] >= 0.1:
            assert g["top_emotion"] == w["top_emotion"], (g, w)
        worst = max(worst, max(abs(float(g[e]) - float(w[e])) for e in emotions))
    assert worst <= loss
    return worst


def _share(row: dict[str, str], key: str) -> bool:
    try:
        return 0.0 <= float(row[key]) <= 1.0 and key not in ("segment", "latency_ms", "duration_s")
    except ValueError:
        return False


@pytest.mark.weights
@pytest.mark.system
@pytest.mark.parametrize("name", CODECS)
def test_each_format_replays_to_the_wavs_segments(name: str, replayed) -> None:
    same_segments(replayed[name], replayed["wav"], LOSS[name])


@pytest.mark.weights
@pytest.mark.system
def test_standard_input_a_container_or_raw_pcm_gives_the_files_rows(encoded, replayed, tmp_path: Path) -> None:
    """`cat sample.m4a | emomon replay -` (an MP4 index at the end: read from a spooled copy)
    gives the file's rows; raw 16-bit PCM through `-` gives the WAV's own. The rows' source
    is `stdin`."""
    with encoded["m4a"].open("rb") as pipe:
        piped = replay(["-", "--csv", "pipe.csv"], tmp_path, stdin=pipe)
    assert piped.returncode == 0, piped.stderr
    by_pipe = rows(tmp_path / "pipe.csv")
    assert {r["source"] for r in by_pipe} == {"stdin"}
    same_segments(by_pipe, replayed["m4a"], 1e-4)
    pcm = tmp_path / "sample.s16"
    pcm.write_bytes(sf.read(SAMPLE, dtype="int16")[0].astype("<i2").tobytes())
    with pcm.open("rb") as pipe:
        raw = replay(["-", "--format", "s16le", "--rate", "16000", "--csv", "raw.csv"], tmp_path, stdin=pipe)
    assert raw.returncode == 0, raw.stderr
    same_segments(rows(tmp_path / "raw.csv"), replayed["wav"], 1e-4)
    assert "6 segment(s) from 1 input(s)" in raw.stdout


def test_the_flags_say_what_is_wrong_before_any_model_loads(capsys) -> None:
    from emomon.cli import main

    for args, message in (
        (["a.wav", "--format", "s16le"], "describe raw PCM on standard input: replay - alone."),
        (["-", "--rate", "8000"], "say its --format (s16le or f32le) too."),
        (["-", "-"], "Standard input ('-') can be read once in a run."),
        (["-", "--duration", "0"], "--duration 0.0 must be a positive number of seconds."),
        (["-", "--format", "s16le", "--rate", "10"], "at least 1000 Hz"),
    ):
        assert main(["replay", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)


@pytest.mark.system
def test_without_pyav_each_input_it_needs_names_the_extra(tmp_path: Path, encoded: dict[str, Path]) -> None:
    """In a process where `av` cannot be imported: an M4A, `-` and a URL each say in one
    sentence which pip install reads them; a WAV still plays (libsndfile)."""
    probe = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'av' else real(name, *a)\n"
        "from emomon.streamer.audio.sources import open_source\n"
        "from emomon.model.errors import AudioError\n"
        f"print(open_source({str(SAMPLE)!r}).rate)\n"
        f"for target in ({str(encoded['m4a'])!r}, '-', 'https://radio.example/live'):\n"
        "    try:\n"
        "        open_source(target)\n"
        "    except AudioError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO.parent, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr
    assert lines[0] == "16000"
    assert lines[1].endswith("is not a format libsndfile reads (WAV, FLAC, Ogg, MP3); other formats need FFmpeg: "
                             "pip install 'emomon[media]'.")  # fmt: skip
    assert lines[2] == "Standard input is read through FFmpeg: pip install 'emomon[media]'."
    assert lines[3] == "The stream 'https://radio.example/live' is read through FFmpeg: pip install 'emomon[media]'."


@pytest.mark.weights
@pytest.mark.system
def test_batch_scores_a_folder_of_containers_and_reports_a_truncated_one(encoded, replayed, tmp_path: Path) -> None:
    """A folder mixing WAV, M4A, WebM and an MP4 cut in half: every good file scored as
    replay scores it, the cut one in errors.csv with the time it reached (what came before
    kept), and --resume finds nothing left to do."""
    import pyarrow.parquet as pq

    folder = tmp_path / "calls"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "a.wav")
    shutil.copy(encoded["m4a"], folder / "b.m4a")
    shutil.copy(encoded["webm"], folder / "c.webm")
    whole = encode(read_audio(SAMPLE), SAMPLE_RATE, tmp_path / "whole.mp4", "mp4", faststart=True)
    (folder / "d.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (folder / "notes.txt").write_text("not audio")
    run = [*CLI, "batch", str(folder), "--out", "out", "--workers", "1"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # one file could not be scored to its end
    with (tmp_path / "out" / "errors.csv").open(newline="") as f:
        errors = {Path(r["path"]).name: r["error"] for r in csv.DictReader(f)}
    assert errors.keys() == {"d.mp4"} and "broke off after" in errors["d.mp4"]
    segments = pq.read_table(tmp_path / "out" / "segments").to_pylist()
    by = {name: sorted((r for r in segments if Path(r["source"]).name == name), key=lambda r: r["segment"])
          for name in ("a.wav", "b.m4a", "c.webm", "d.mp4")}  # fmt: skip
    assert len(by["a.wav"]) == len(by["b.m4a"]) == len(by["c.webm"]) == 6 and 1 <= len(by["d.mp4"]) < 6
    for name, fmt in (("a.wav", "wav"), ("b.m4a", "m4a"), ("c.webm", "webm")):
        for got, want in zip(by[name], replayed[fmt]):
            assert f"{got['start_s']:.3f}" == want["start_s"] and got["top_emotion"] == want["top_emotion"]
    files = {Path(r["path"]).name: r for r in pq.read_table(tmp_path / "out" / "files.parquet").to_pylist()}
    assert files["c.webm"]["sample_rate"] == 48000 and files["b.m4a"]["file_duration_s"] == pytest.approx(19, 0.01)
    again = subprocess.run([*run, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "0 file(s) to score (4 already done)" in again.stdout, again.stdout + again.stderr
