"""What live and replay write besides the screen: JSON Lines, saved segment audio, interim
results. Through the real command on the bundled sample and real Emo-DB speech."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.data import SAMPLE, load_clip
from support.models import make_bundle
from support.outputs import kill_writer
from support.processes import run_cli

from emomon.model.audio import SAMPLE_RATE
from emomon.model.bundle import save_bundle
from emomon.model.encoder import load_encoder
from emomon.model.specs import EncoderSpec
from emomon.streamer.audio.segmenter import Segmenter
from emomon.streamer.audio.stream import speech_span
from emomon.streamer.outputs.jsonl_log import JsonlLog
from emomon.streamer.outputs.record import Row

CLI = [sys.executable, "-m", "emomon.cli"]


def emomon(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.weights
def test_jsonl_on_stdout_is_json_only_and_matches_the_csv(tmp_path: Path) -> None:
    out = run_cli("replay", "--sample", "--speed", "0", "--no-dashboard", "--jsonl", "-", "--csv", "log.csv",
                 cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]  # every stdout line is one JSON object
    rows = read_csv(tmp_path / "log.csv")
    assert len(records) == len(rows) == 6
    for r, row in zip(records, rows):
        assert r["type"] == "segment" and r["status"] == "ok" and r["id"] == row["id"]
        assert r["segment"] == int(row["segment"]) and r["start_s"] == float(row["start_s"])
        assert r["top_emotion"] == row["top_emotion"] == max(r["shares"], key=r["shares"].get)
        assert {e: round(float(row[e]), 6) for e in r["shares"]} == r["shares"]
        assert abs(sum(r["shares"].values()) - 1.0) < 1e-3  # the default model's softmax
        assert "attention" not in r
    assert len({r["id"] for r in records}) == 6
    assert "6 segment(s) from 1 file(s)" in out.stderr  # the human lines moved to stderr


def test_jsonl_attention_weights_with_their_hop(tmp_path: Path) -> None:
    """An Architecture-2 bundle (tiny real encoder) writes its attention rows, each summing to 1."""
    encoder = load_encoder(EncoderSpec(kind="egemaps", name="eGeMAPSv02"))
    bundle = save_bundle(make_bundle(encoder, arch=2, head="shared"), tmp_path / "arch2")
    out = run_cli("replay", "--sample", "--speed", "0", "--model", str(bundle), "--no-dashboard",
                 "--jsonl", "seg.jsonl", "--attention", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "seg.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for r in records:
        weights = np.array(r["attention"]["weights"])
        assert weights.ndim == 2 and np.allclose(weights.sum(1), 1.0, atol=1e-4)
        frames = weights.shape[1]
        assert abs(frames * r["attention"]["hop_s"] - r["duration_s"]) < 0.1  # the weights cover the segment


@pytest.mark.system
def test_a_killed_jsonl_writer_leaves_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    kill_writer(f"JsonlLog({str(path)!r})", path, 50_000)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert len(records) > 100 and [r["segment"] for r in records] == list(range(len(records)))


def test_jsonl_record_of_a_dropped_segment_has_no_shares(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "x.jsonl")
    log.write(Row("mic", 3, 1.0, 2.0, "2026-11-25T10:00:00.000+00:00", None, None, "dropped", "r-mic-0003"))
    log.close()
    (r,) = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert r["status"] == "dropped" and r["shares"] is None and r["top_emotion"] is None
    assert r["wall_time"].startswith("2026-11-25T10:00")


@pytest.mark.weights
def test_save_audio_writes_exactly_what_was_scored(tmp_path: Path) -> None:
    out = run_cli("replay", "--sample", "--speed", "0", "--no-dashboard", "--csv", "log.csv",
                 "--save-audio", "clips", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "6 segment(s) from 1 file(s), 6 saved" in out.stdout
    sample, _ = sf.read(SAMPLE, dtype="float32")
    rows = read_csv(tmp_path / "log.csv")
    assert sorted(p.stem for p in (tmp_path / "clips").iterdir()) == sorted(r["id"] for r in rows)
    for r in rows:
        audio, rate = sf.read(tmp_path / "clips" / f"{r['id']}.flac", dtype="float32")
        info = sf.info(tmp_path / "clips" / f"{r['id']}.flac")
        assert rate == SAMPLE_RATE and info.format == "FLAC" and info.channels == 1
        a = round(float(r["start_s"]) * SAMPLE_RATE)
        assert len(audio) == round(float(r["duration_s"]) * SAMPLE_RATE)
        assert np.allclose(audio, sample[a : a + len(audio)], atol=1 / 32768 + 1e-6)  # 16-bit FLAC of the same audio


@pytest.mark.system
def test_save_audio_into_an_unusable_folder_is_one_sentence_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    out = emomon("replay", "--sample", "--speed", "0", "--no-dashboard", "--csv", "log.csv",
                 "--save-audio", "a-file/clips", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    said = "emomon: Cannot save segment audio in 'a-file/clips' (Not a directory); scoring and logging go on.\n"
    assert out.stderr == said  # once, not once per segment
    assert len(read_csv(tmp_path / "log.csv")) == 6
    assert "6 segment(s) from 1 file(s), 0 saved (7 not saved)" in out.stdout  # the folder, then each segment


@pytest.mark.system
def test_save_audio_onto_a_full_disk_keeps_whole_files_and_the_run_goes_on(tmp_path: Path) -> None:
    """The clips go to a 96 KiB tmpfs that fills after two or three of the six segments. Where
    mounting is not permitted, a file-size limit (RLIMIT_FSIZE) on the process stands in for
    the full disk: the same write error path, "File too large" instead of "No space left"."""
    import resource
    import signal

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)],
                             capture_output=True).returncode == 0  # fmt: skip

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (36 * 1024, 36 * 1024))  # the clips are 29-41 KB

    try:
        out = subprocess.run(
            [*CLI, "replay", "--sample", "--speed", "0", "--no-dashboard", "--csv", "log.csv", "--save-audio",
             str(small / "clips")],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=None if mounted else limit_file_size,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        reason = "No space left on device" if mounted else "File too large"
        assert (
            out.stderr
            == f"emomon: Cannot save segment audio in '{small / 'clips'}' ({reason}); scoring and logging go on.\n"
        )
        rows = read_csv(tmp_path / "log.csv")
        assert [r["status"] for r in rows] == ["ok"] * 6
        files = sorted((small / "clips").iterdir())
        assert all(f.suffix == ".flac" and not f.name.startswith(".") for f in files)  # no partial file left
        assert (
            1 <= len(files) < 6
            and f"6 segment(s) from 1 file(s), {len(files)} saved ({6 - len(files)} not saved)" in out.stdout
        )
        ids = {r["id"]: r for r in rows}
        for f in files:  # every file that is there is whole
            audio, _ = sf.read(f, dtype="float32")
            assert len(audio) == round(float(ids[f.stem]["duration_s"]) * SAMPLE_RATE)
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=False)


def monologue(tmp_path: Path) -> Path:
    """About 10 s of one speaker talking without a pause: four Emo-DB sentences, trimmed."""
    parts = []
    for name in ("03a01Wa.wav", "03a02Wb.wav", "03a04Wc.wav", "03a05Wa.wav"):
        audio = load_clip(name)
        a, b = speech_span(audio)
        parts.append(audio[a:b])
    silence = np.zeros(SAMPLE_RATE, np.float32)
    path = tmp_path / "monologue.wav"
    sf.write(path, np.concatenate([silence, *parts, silence]), SAMPLE_RATE)
    return path


@pytest.mark.weights
def test_interim_results_while_someone_keeps_talking(tmp_path: Path) -> None:
    wav = monologue(tmp_path)
    out = run_cli("replay", str(wav), "--speed", "4", "--no-dashboard", "--jsonl", "seg.jsonl", "--csv", "log.csv",
                 "--interim", "2", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "seg.jsonl").read_text().splitlines()]
    final = [r for r in records if r["type"] == "segment"]
    interim = [r for r in records if r["type"] == "interim"]
    assert len(final) == 1 and final[0]["duration_s"] > 7.0  # one long segment
    assert len(interim) >= 3
    assert all(r["id"] == final[0]["id"] and r["start_s"] == final[0]["start_s"] for r in interim)
    lengths = [r["duration_s"] for r in interim]
    # every 2 s of the open segment, checked once per replay block (0.5 s; 50 ms live)
    assert 2.0 <= lengths[0] < 2.55 and all(abs(b - a - 2.0) < 0.1 for a, b in zip(lengths, lengths[1:]))
    assert records.index(final[0]) > records.index(interim[-1])  # the final result comes last
    assert len(read_csv(tmp_path / "log.csv")) == 1  # the CSV keeps final rows only
    assert "interim" in out.stdout.splitlines()[-1]

    off = run_cli("replay", str(wav), "--speed", "4", "--no-dashboard", "--jsonl", "off.jsonl", "--interim", "0",
                 cwd=tmp_path)  # fmt: skip
    assert off.returncode == 0 and '"interim"' not in (tmp_path / "off.jsonl").read_text()


@pytest.mark.corpora
def test_open_segment_is_the_final_segment_so_far() -> None:
    audio = load_clip("03a01Wa.wav")
    seg = Segmenter()
    seg.push(np.zeros(SAMPLE_RATE // 2, np.float32))
    assert seg.open_segment() is None  # silence: nothing open
    half = len(audio) // 2
    seg.push(audio[:half])
    so_far = seg.open_segment()
    assert so_far is not None and so_far.index == 0
    rest = seg.push(audio[half:]) + seg.push(np.zeros(SAMPLE_RATE, np.float32))
    (final,) = rest
    assert final.index == so_far.index and final.start_s == so_far.start_s
    assert np.array_equal(final.audio[: len(so_far.audio)], so_far.audio)


@pytest.mark.weights
def test_interim_results_leave_the_session_statistics_alone(default_predictor) -> None:
    predictor = default_predictor
    predictor.norm.mode = "speaker"  # as a speaker-adaptive bundle's
    audio = load_clip("03a01Wa.wav")
    before = (predictor.norm.n_session, predictor.norm.mean.clone())
    predictor.predict([audio], update_session=False)
    assert predictor.norm.n_session == before[0] and predictor.norm.mean.equal(before[1])
    predictor.predict([audio])
    assert predictor.norm.n_session > before[0]
