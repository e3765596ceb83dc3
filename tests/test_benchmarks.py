"""The benchmark scripts keep working: a --quick run writes well-formed numbers."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.data import REPO

pytestmark = [pytest.mark.system]


def test_bench_model_quick_run(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_model.py", "--quick", "--device", "cpu",
         "--out", str(tmp_path), "--doc", str(doc)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "bench_model_quick.json").read_text())
    (enc,) = result["encoders"]
    assert enc["bare_ms"] > 0 and enc["emomon_ms"] > 0 and 0.9 < enc["bf16_cosine"] <= 1.0
    (bank,) = result["bank"]
    assert bank["fused_ms"] > 0 and bank["loop_ms"] > 0 and bank["max_abs_diff"] <= 1e-5
    assert "| hubert-tiny |" in out.stdout
    assert not doc.exists()  # --quick never overwrites the recorded numbers


def test_bench_vad_writes_every_condition(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_vad.py", "--seeds", "1", "--out", str(tmp_path), "--doc", str(doc)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    by_engine = json.loads((tmp_path / "bench_vad.json").read_text())["rows"]
    assert set(by_engine) == {"webrtc", "silero"}
    silero = by_engine["silero"]
    assert all(r["audible"]["one_per_clip"] for r in silero if r["noise"] == "clean")
    assert all(r["segments"] <= r["clips"] for r in silero)  # no stray segments
    assert all(0 < r["core_pct"] < 5 for r in silero)
    rows = by_engine["webrtc"]
    conditions = [("clean", None)] + [(kind, snr) for snr in (20, 10) for kind in ("white", "pink", "babble")]
    assert [(r["programme"], r["noise"], r["snr_db"]) for r in rows] == [
        (p, *c) for p in (0, 11, 22, 33) for c in conditions
    ]
    clean = [r["audible"] for r in rows if r["noise"] == "clean"]
    assert all(c["one_per_clip"] and c["within"] == c["of"] == 24 for c in clean)
    assert all(r["audible"]["one_per_clip"] for r in rows if r["snr_db"] == 20 and r["noise"] != "babble")
    text = doc.read_text()
    assert "## VAD boundaries" in text and "| webrtc | clean | 4/4 | 0 | 96/96 (worst " in text
    assert "| silero | clean | 4/4 | 0 |" in text


def test_bench_default_model_quick_run(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_default_model.py", "--quick", "--out", str(tmp_path), "--doc", str(doc)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "bench_default_model_quick.json").read_text())
    assert result["threads"] == 1 and result["bundle_bytes"] > 0
    assert [r["segment_s"] for r in result["rows"]] == [1.0, 2.0, 4.0]
    for dtype in ("auto", "float32"):
        assert all(r[f"{dtype}_ms"] >= r[f"{dtype}_encoder_ms"] > 0 for r in result["rows"])
    bare = result["bare_encoder_2s_ms"]
    assert bare["all six layers, float32, padded to 30 s"] > bare["all six layers, float32"] > 0
    agree = result["auto_vs_float32"]
    assert agree["sentences"] == 6 and 0 <= agree["mean_abs_share_diff"] <= agree["max_abs_share_diff"] <= 1
    assert "2 s segment:" in out.stdout and not doc.exists()


def test_bench_serve_quick_run(tmp_path: Path) -> None:
    """Two real-time clients (each in a process of its own) against a real server, staggered
    and then aligned: every sentence comes back with a latency."""
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_serve.py", "--streams", "2", "--sentences", "2", "--no-doc",
         "--also-aligned", "2", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "bench_serve.json").read_text())
    rows = result["rows"]
    assert result["clients"] == "in 2 processes of their own"  # apart from the server and the benchmark
    assert [r["starts"] for r in rows] == ["staggered", "aligned"]
    for row in rows:
        assert row["streams"] == 2 and row["sentences"] == 4 and row["dropped"] == 0
        assert row["matched"] == 4 and 0.3 < row["p50_s"] <= row["p95_s"]  # the hang-over is inside
        assert 0 < row["server_cpu_cores"] <= 2.5
    assert "Largest N that holds (p95 <= 1.2 s): staggered **" in out.stdout and "aligned **" in out.stdout
    assert "Largest N that keeps up" in out.stdout


@pytest.mark.usefixtures("ray_alone")  # a local Ray instance
def test_bench_batch_quick_run(tmp_path: Path) -> None:
    """Replay and two local workers on three minutes of corpus speech: the same segments, numbers for each."""
    doc = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_batch.py", "--quick", "--runs", "replay,local2", "--out", str(tmp_path),
         "--doc", str(doc)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "bench_batch_quick.json").read_text())
    replay, local2 = result["rows"]
    assert replay["segments"] == local2["segments"] > 25
    assert len(local2["workers"]) == 2 and all(w["peak_mb"] > 100 for w in local2["workers"])
    assert replay["throughput"] > 0 and local2["cpu_cores"] > 0 and result["local2_over_replay"] > 0
    assert "| local2 |" in out.stdout and not doc.exists()


def test_bench_speakers_quick_run(tmp_path: Path) -> None:
    """Two conversations per condition from six sentences per speaker: every number in range."""
    doc = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_speakers.py", "--quick", "--per-speaker", "6", "--out", str(tmp_path),
         "--doc", str(doc)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "bench_speakers_quick.json").read_text())
    assert list(result["backends"]) == ["none", "default"]  # before and after, on the same conversations
    for backend in result["backends"].values():
        test = backend["test"]
        for cond in ("2 clean", "2 at 20 dB", "3 clean", "4 clean", "2 held", "3 held"):
            assert test[cond]["n"] == 2 and 0 <= test[cond]["confusion"] <= 1 and 0 <= test[cond]["right_count"] <= 1
        assert test["turns"]["n"] > 0 and test["single"]["n"] == 2
        assert backend["ms_per_2s_segment_one_core"] > 0
    none, default = (result["backends"][b]["test"] for b in ("none", "default"))
    assert none["turns"]["n"] == default["turns"]["n"]  # the same conversations
    assert not doc.exists()


def test_study_tables_rebuild_from_the_saved_runs(tmp_path: Path) -> None:
    """study_seven_corpora and lexical_confound rewrite their doc sections from the saved
    results: one row per variant (and the probe), one per corpus part."""
    for name in ("study_seven_corpora.json", "lexical_confound.json"):
        (tmp_path / name).write_text((REPO / "benchmarks" / "results" / name).read_text())
    doc = tmp_path / "training.md"
    for script in ("study_seven_corpora.py", "lexical_confound.py"):
        out = subprocess.run(
            [sys.executable, f"benchmarks/{script}", "--table", "--out", str(tmp_path), "--doc", str(doc)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
    text = doc.read_text()
    runs = json.loads((tmp_path / "study_seven_corpora.json").read_text())["runs"]
    loco = text[
        text.index("<!-- study_seven_corpora_loco:begin -->") : text.index("<!-- study_seven_corpora_loco:end -->")
    ]
    variants = {r["variant"] for r in runs if r["protocols"] == "loco"}
    assert loco.count("\n| ") == 1 + len(variants) + 1  # header, a row per variant, the linear probe
    assert "| linear probe |" in loco and "| base |" in loco
    lexical = json.loads((tmp_path / "lexical_confound.json").read_text())["results"]
    section = text[text.index("<!-- lexical_confound:begin -->") : text.index("<!-- lexical_confound:end -->")]
    assert section.count("\n| ") == 1 + sum(len(v) for v in lexical.values())


def quick_rows(tmp_path: Path, script: str, **env: str) -> list[dict]:
    """`benchmarks/<script> --quick`: the dict lines it prints; it writes no result or doc file."""
    out = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick", "--out", str(tmp_path / "r.json"),
         "--doc", str(tmp_path / "b.md")],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "b.md").exists()
    return [ast.literal_eval(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.weights
@pytest.mark.corpora
def test_bench_onnx_quick_run(tmp_path: Path) -> None:
    """Both exports (from the run's ONNX cache), both engines timed, agreement over 20 Emo-DB
    sentences; --quick saves nothing."""
    lines = quick_rows(tmp_path, "bench_onnx.py")
    speed, agree = lines[:2], {r["engine"]: r for r in lines[2:]}
    assert [r["threads"] for r in speed] == [1, 2] and all(r["onnx int8"] > 0 for r in speed)
    assert float(agree["onnx float32"]["max"]) < 1e-4 and agree["onnx float32"]["same top"] == "100.0%"


@pytest.mark.corpora
@pytest.mark.weights
def test_study_speaker_backend_quick_run(tmp_path: Path) -> None:
    """Three corpora, six files per speaker: every back-end gives an equal error rate per corpus."""
    rows = quick_rows(tmp_path, "study_speaker_backend.py", XDG_CACHE_HOME=str(tmp_path))
    assert [r["back-end"].split(" (")[0] for r in rows] == [
        "cosine", "centred", "centred + NAP", "centred + LDA", "centred + AAM projection"
    ]  # fmt: skip
    assert all({"emodb", "ravdess"} <= set(r) and all(0 <= v <= 0.5 for k, v in r.items() if k != "back-end")
               for r in rows)  # fmt: skip


def test_bench_plot_quick_run(tmp_path: Path) -> None:
    """A six-minute CSV and a batch folder of 30 such files, each drawn as PNG and SVG."""
    rows = quick_rows(tmp_path, "bench_plot.py")
    assert [(r["format"], r["segments"]) for r in rows] == [("png", 120), ("svg", 120)] * 2
    assert all(r["seconds"] > 0 and 20 < r["peak_mb"] < 2000 for r in rows)


@pytest.mark.weights
def test_bench_adapt_quick_run(tmp_path: Path) -> None:
    """A training step of each way to adapt Whisper base's first layers, timed; LoRA trains the fewest weights."""
    rows = {r["variant"]: r for r in quick_rows(tmp_path, "bench_adapt.py")}
    assert list(rows) == ["lora", "layer3", "layers1-3"] and all(r["ms_per_clip"] > 0 for r in rows.values())
    assert rows["lora"]["trainable_m"] < 1 < rows["layer3"]["trainable_m"] < rows["layers1-3"]["trainable_m"]


def test_bench_decode_quick_run(tmp_path: Path) -> None:
    """Every input through both decoders where both read it, the two resamplers, memory over
    five minutes of AAC; --quick saves nothing."""
    lines = quick_rows(tmp_path, "bench_decode.py")
    decoding, resampling, memory = lines[:6], lines[6], lines[7]
    assert [r["input"] for r in decoding] == ["wav", "flac", "m4a", "webm", "mp3", "mp4"]
    assert all(r["FFmpeg %"] > 0 and r["MB per hour"] > 0 for r in decoding)
    assert [r["libsndfile %"] == "-" for r in decoding] == [False, False, True, True, False, True]
    assert resampling["soxr %"] > 0 and 0 < resampling["soxr round trip"] < 0.05
    assert memory["minutes"] == 5 and memory["rss after 1 min MB"] > 0
