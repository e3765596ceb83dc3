"""Who is speaking: the speaker encoder against Resemblyzer's own output, its pinned weights,
the tracker and the turn finder on real Emo-DB speech."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.data import load_clip
from support.data import speech_sentence as speech
from support.processes import run_cli
from support.speakers import SAME, SAME_TOML, build_conversation

from emomon.model.audio import SAMPLE_RATE
from emomon.model.errors import EncoderLoadError
from emomon.model.pinned import pinned_files, read_pinned
from emomon.model.speaker import SPEAKER_WEIGHTS, SpeakerEncoder, partial_starts
from emomon.model.tracker import SpeakerSettings, SpeakerTracker, speaker_parts

pytestmark = [pytest.mark.system, pytest.mark.corpora, pytest.mark.weights]

REFERENCE = Path(__file__).parent / "data" / "resemblyzer_reference.json"
# Speaker 03 (male) and 08 (female), each through anger, happiness, neutral, sadness, boredom, fear
MALE = ["03a01Wa.wav", "03a01Fa.wav", "03a01Nc.wav", "03a02Ta.wav", "03a04Lc.wav", "03a04Ad.wav"]
FEMALE = ["08a01Wa.wav", "08a01Fd.wav", "08a01Na.wav", "08a02Tb.wav", "08a01Lc.wav", "08a01Ab.wav"]


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def test_embeddings_equal_resemblyzers_own(encoder: SpeakerEncoder) -> None:
    """tests/data/make_resemblyzer_reference.py ran Resemblyzer 0.1.4 itself (with librosa)."""
    ref = json.loads(REFERENCE.read_text())
    names = list(ref["clips"])
    first = load_clip(names[0])
    wavs = [first * np.float32(0.02) if n == "quiet" else load_clip(n) for n in names]  # "quiet": raised to -30 dBFS
    got = encoder.embed(wavs)
    for name, wav, e in zip(names, wavs, got):
        want = np.asarray(ref["clips"][name]["embedding"], np.float32)
        assert len(partial_starts(len(wav))) == ref["clips"][name]["partials"], name
        assert np.max(np.abs(e - want)) < 1e-5, name
        assert encoder.mels(wav).shape[0] == ref["clips"][name]["mel_frames"]
    # One batch or one at a time: the same numbers.
    alone = np.stack([encoder.embed([w])[0] for w in wavs])
    assert np.max(np.abs(alone - got)) < 1e-5


def test_weights_are_the_pinned_file_or_one_sentence(tmp_path: Path) -> None:
    paths = pinned_files(SPEAKER_WEIGHTS)
    assert paths is not None, f"not installed: pip install {SPEAKER_WEIGHTS.requirement}"
    copy = tmp_path / "pretrained.pt"
    shutil.copyfile(paths[0], copy)
    with open(copy, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(EncoderLoadError, match=r"Speaker encoder weights .*pretrained.pt are not the pinned file.*"
                                               r"reinstall --no-deps resemblyzer==0.1.4"):  # fmt: skip
        read_pinned([copy], SPEAKER_WEIGHTS)
    with pytest.raises(EncoderLoadError, match="cannot be read"):
        read_pinned([tmp_path / "gone.pt"], SPEAKER_WEIGHTS)


# The tracker's mechanics at a stated threshold; how well the defaults do on conversations of
# unseen speakers is benchmarks/bench_speakers.py's (docs/benchmarks.md, "Speakers").


def test_two_voices_through_their_emotions_are_two_speakers(encoder: SpeakerEncoder) -> None:
    tracker = SpeakerTracker(SAME)
    segs = [speech(n) for pair in zip(MALE, FEMALE) for n in pair]  # taking turns
    got = [tracker.assign(e, len(s) / SAMPLE_RATE) for s, e in zip(segs, encoder.embed(segs))]
    assert got == ["speaker 1", "speaker 2"] * len(MALE)


def test_one_voice_through_its_emotions_stays_one_speaker(encoder: SpeakerEncoder) -> None:
    for voice in (MALE, FEMALE):
        tracker = SpeakerTracker(SAME)
        segs = [speech(n) for n in voice]
        assert {tracker.assign(e, len(s) / SAMPLE_RATE) for s, e in zip(segs, encoder.embed(segs))} == {"speaker 1"}


@pytest.mark.parametrize(("him", "her"), [("SM0", "EB0"), ("KS0", "KD0"), ("TP0", "MK0")])
def test_a_turn_change_without_a_pause_is_found_within_half_a_second(encoder, him: str, her: str) -> None:
    """nEMO: a man (anger, then sadness) answered at once by a woman (neutral, then happiness)."""
    first = np.concatenate([speech(f"{him}_anger_1.opus"), speech(f"{him}_sadness_2.opus")])
    second = np.concatenate([speech(f"{her}_neutral_1.opus"), speech(f"{her}_happiness_2.opus")])
    parts, alone = speaker_parts(encoder, [np.concatenate([first, second]), first], SAME.turn)
    assert len(alone) == 1  # one voice through two emotions: no cut
    assert len(parts) == 2
    assert abs(parts[0].end - len(first)) <= 0.5 * SAMPLE_RATE, (parts[0].end - len(first)) / SAMPLE_RATE
    assert parts[1].start == parts[0].end and parts[1].end == len(first) + len(second)
    # Each part's embedding is nearer its own voice alone than the other's.
    own = encoder.embed([first, second])
    assert parts[0].embedding @ own[0] > parts[0].embedding @ own[1]
    assert parts[1].embedding @ own[1] > parts[1].embedding @ own[0]


def test_enrolled_voices_keep_their_names(encoder: SpeakerEncoder) -> None:
    tracker = SpeakerTracker(SAME)
    enrol = [speech("SM0_neutral_1.opus"), speech("SM0_neutral_2.opus")]
    tracker.enrol("agent", encoder.embed([np.concatenate(enrol)])[0], sum(map(len, enrol)) / SAMPLE_RATE)
    names = ("EB0_anger_3.opus", "SM0_anger_3.opus", "EB0_sadness_3.opus", "SM0_happiness_3.opus")
    segs = [speech(n) for n in names]
    got = [tracker.assign(e, len(s) / SAMPLE_RATE) for s, e in zip(segs, encoder.embed(segs))]
    assert got == ["speaker 2", "agent", "speaker 2", "agent"]
    tracker.reset()
    assert [s.name for s in tracker.speakers] == ["agent"]


def test_bad_speaker_settings_say_which() -> None:
    with pytest.raises(ValueError, match="max_speakers must be 1 or more, not 0"):
        SpeakerSettings(max_speakers=0)
    with pytest.raises(ValueError, match="same must be a cosine similarity between -1 and 1, not 1.5"):
        SpeakerSettings(same=1.5)


def who_spoke(ref: list[tuple[float, float, str]], start: float, end: float) -> str:
    """The reference speaker who spoke most of [start, end)."""
    return max(ref, key=lambda r: min(end, r[1]) - max(start, r[0]))[2]


def test_replay_says_who_spoke_each_segment(tmp_path: Path) -> None:
    path, ref = build_conversation(tmp_path)
    enrol = tmp_path / "agent.wav"
    sf.write(enrol, np.concatenate([speech("SM0_neutral_1.opus"), speech("SM0_neutral_2.opus")]), SAMPLE_RATE)
    (tmp_path / "config.toml").write_text(SAME_TOML)  # as above
    cli = ["replay", str(path), "--speed", "0", "--no-dashboard"]
    plain = run_cli(*cli, "--speakers", "--csv", "a.csv", "--jsonl", "a.jsonl", cwd=tmp_path)
    named = run_cli(*cli, "--speaker", f"agent={enrol}", "--csv", "b.csv", cwd=tmp_path)
    assert plain.returncode == 0 and named.returncode == 0, plain.stderr + named.stderr
    with (tmp_path / "a.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert "speaker" in rows[0] and all(r["status"] == "ok" for r in rows)
    truth = [who_spoke(ref, float(r["start_s"]), float(r["end_s"])) for r in rows]
    assert truth == ["SM0", "EB0", "SM0", "EB0", "SM0", "EB0"]  # the last answer was split off
    assert rows[-2]["segment"] == rows[-1]["segment"]  # one VAD segment, two parts
    assert rows[-2]["id"].endswith("-1") and rows[-1]["id"].endswith("-2")
    assert [r["speaker"] for r in rows] == ["speaker 1", "speaker 2"] * 3
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["speaker"] for r in records] == [r["speaker"] for r in rows]
    with (tmp_path / "b.csv").open(newline="") as f:
        assert [r["speaker"] for r in csv.DictReader(f)] == ["agent", "speaker 2"] * 3
    assert "  agent" in named.stdout  # the printed line names the speaker too
    # emomon's defaults ([speakers] as shipped: the speaker back-end, its tuned thresholds)
    (tmp_path / "defaults.toml").write_text("")
    shipped = run_cli("--config", "defaults.toml", *cli, "--speakers", "--csv", "c.csv", cwd=tmp_path)
    assert shipped.returncode == 0, shipped.stderr
    with (tmp_path / "c.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    pairs = {(who_spoke(ref, float(r["start_s"]), float(r["end_s"])), r["speaker"]) for r in rows}
    assert len(rows) >= 6 and pairs == {("SM0", "speaker 1"), ("EB0", "speaker 2")}, pairs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speaker", "agent"], "Speaker 'agent' must be NAME=FILE (for example agent=agent.wav)."),
        (["--speaker", "agent=gone.wav"], "Audio file 'gone.wav' does not exist."),
        (["--speakers", "--server", "ws://127.0.0.1:1"], "--speakers runs where the model runs"),
        (["--channels", "each", "--server", "ws://127.0.0.1:1"], "replay --channels each runs where the model runs"),
    ],
)
def test_bad_speaker_options_are_one_sentence(
    args: list[str], message: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    from emomon.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["replay", "--sample", "--speed", "0", "--no-dashboard", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emomon: ") and message in err and err.count("\n") == 1, err


@pytest.mark.usefixtures("ray_alone")  # a local Ray instance
def test_batch_names_speakers_as_replay_does_on_both_engines_and_a_channel_is_its_speaker(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path, ref = build_conversation(tmp_path)
    (tmp_path / "config.toml").write_text(SAME_TOML)
    cli = [sys.executable, "-m", "emomon.cli"]
    replayed = subprocess.run([*cli, "replay", str(path), "--speed", "0", "--no-dashboard", "--speakers", "--csv",
                               "r.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    mono = subprocess.run([*cli, "batch", str(path), "--out", "mono", "--speakers", "--workers", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    audio, _ = sf.read(path, dtype="float32")
    t = np.arange(len(audio)) / SAMPLE_RATE  # the same call recorded with one person per channel
    channels = [np.where([who_spoke(ref, x, x) == who for x in t], audio, 0) for who in ("SM0", "EB0")]
    sf.write(tmp_path / "stereo.wav", np.stack(channels, axis=1), SAMPLE_RATE)
    stereo = subprocess.run([*cli, "batch", "stereo.wav", "--out", "stereo", "--speakers", "--channels", "each",
                             "--workers", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    each = subprocess.run([*cli, "replay", "stereo.wav", "--speed", "0", "--no-dashboard", "--channels", "each",
                           "--csv", "each.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    done = (replayed, mono, stereo, each)
    assert all(d.returncode == 0 for d in done), "".join(d.stderr for d in done)
    with (tmp_path / "r.csv").open(newline="") as f:
        mono_rows = list(csv.DictReader(f))  # replay's, of the mixed call
    want = [(int(r["segment"]), r["speaker"], float(r["start_s"])) for r in mono_rows]
    rows = pq.read_table(tmp_path / "mono" / "segments").to_pylist()
    assert [(r["segment"], r["speaker"], round(r["start_s"], 3)) for r in rows] == want

    from emomon.model.compute import choose_dtype

    # bfloat16 (auto's choice on CPUs with fast kernels) rounds a batch of segments differently
    # from one segment alone (AMX tiles: up to 2.5e-3 on a share measured); float32 does not
    tolerance = 1e-2 if choose_dtype("auto", "cpu")[0] == "bfloat16" else 1e-5

    def same_shares(got: list[dict]) -> None:
        """The default adapts its normalisation to each speaker's session: batch keeps the
        sessions replay keeps (one per speaker), so the shares agree too."""
        for g, w in zip(got, mono_rows, strict=True):
            for e in ("anger", "neutral", "sadness", "happiness"):
                assert g[e] == pytest.approx(float(w[e]), abs=tolerance), (g["segment"], g["speaker"], e)

    same_shares(rows)
    assert {r["speaker"] for r in rows} == {"speaker 1", "speaker 2"}
    rows = pq.read_table(tmp_path / "stereo" / "segments").to_pylist()
    assert {r["channel"] for r in rows} == {0, 1} and len(rows) == 6  # a segment per turn, the last one too
    names = {"SM0": "channel 0", "EB0": "channel 1"}  # no clustering: the channel says who
    assert all(r["speaker"] == f"channel {r['channel']}" == names[who_spoke(ref, r["start_s"], r["end_s"])]
               for r in rows)  # fmt: skip
    with (tmp_path / "each.csv").open(newline="") as f:  # replay --channels each: the same segments and speakers
        replay_rows = sorted((r["speaker"], int(r["segment"]), float(r["start_s"])) for r in csv.DictReader(f))
    assert replay_rows == sorted((r["speaker"], r["segment"], round(r["start_s"], 3)) for r in rows)
    ray = subprocess.run([*cli, "batch", str(path), "--out", "ray", "--speakers", "--engine", "ray", "--workers",
                          "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ray.returncode == 0, ray.stderr
    rows = pq.read_table(tmp_path / "ray" / "segments").to_pylist()
    assert [(r["segment"], r["speaker"], round(r["start_s"], 3)) for r in rows] == want  # the segment task names them
    same_shares(rows)
