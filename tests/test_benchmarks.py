"""The benchmark scripts keep working: a --quick run writes well-formed numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
    rows = json.loads((tmp_path / "bench_vad.json").read_text())["rows"]
    assert [(r["noise"], r["snr_db"]) for r in rows] == [("clean", None)] + [
        (kind, snr) for snr in (20, 10) for kind in ("white", "pink", "babble")
    ]
    clean = rows[0]["file_edges"]
    assert clean["one_per_clip"] and clean["within"] == clean["of"] == 24
    assert "## VAD boundaries" in doc.read_text() and "| white 20 dB | 0 | 12 / 12 |" in doc.read_text()
