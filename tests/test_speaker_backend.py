"""The speaker back-end (model/speaker_backend.py): what it learns on voices built to vary in a
known nuisance, its bundle folder and digest, the shipped one on real Emo-DB voices, and the
fitting command on a small real corpus."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.data import EMODB, REPO

from emomon.model.errors import BundleError
from emomon.model.speaker_backend import (
    DEFAULT_FOLDER,
    MANIFEST,
    WEIGHTS,
    fit_nap,
    load_backend,
    resolve_backend,
    save_backend,
    unit_rows,
)
from emomon.model.tracker import SpeakerSettings


def voices(n_speakers: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speakers as points in 32-d, each utterance moved a long way along one of three shared
    "emotion" directions: raw cosine confuses speakers, the within-speaker scatter is those three."""
    rng = np.random.default_rng(seed)
    emotions = np.linalg.qr(rng.standard_normal((32, 3)))[0].T * 3.0  # (3, 32), shared by everyone
    centres = rng.standard_normal((n_speakers, 32))
    noise = 0.1 * rng.standard_normal((n_speakers, per, 32))
    x = np.concatenate([c + emotions[rng.integers(3, size=per)] + e for c, e in zip(centres, noise)])
    return unit_rows(x + 2.0), np.repeat([f"s{i}" for i in range(n_speakers)], per)


def separation(x: np.ndarray, y: np.ndarray) -> float:
    """Mean same-speaker cosine minus mean different-speaker cosine."""
    s = unit_rows(x) @ unit_rows(x).T
    same = y[:, None] == y[None, :]
    off = ~np.eye(len(y), dtype=bool)
    return float(s[same & off].mean() - s[~same].mean())


def test_nap_learns_the_nuisance_on_some_voices_and_removes_it_on_others() -> None:
    x, y = voices(40, 12, seed=0)
    backend = fit_nap(x, y, k=3)
    keep = backend.keep
    assert np.allclose(keep, keep.T) and np.allclose(keep @ keep, keep)  # an orthogonal projection
    assert np.isclose(np.trace(keep), 32 - 3)
    new_x, new_y = voices(10, 12, seed=1)  # other speakers, the same nuisance
    out = backend.apply(new_x)
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert separation(out, new_y) > separation(new_x, new_y) + 0.3
    assert backend.info["method"] == {"name": "centring + NAP", "k": 3}


def test_a_backend_folder_round_trips_and_a_changed_byte_is_refused(tmp_path: Path) -> None:
    x, y = voices(8, 6, seed=2)
    backend = fit_nap(x, y, k=2, info={"fitted_on": {"corpora": ["synthetic"]}})
    folder = save_backend(backend, tmp_path / "b")
    again = load_backend(folder)
    assert np.array_equal(again.mean, backend.mean) and np.array_equal(again.keep, backend.keep)
    assert again.info == backend.info
    assert np.array_equal(again.apply(x), backend.apply(x))
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-3] ^= 1
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"backend.safetensors is corrupt: its SHA-256 differs from .* speaker.json"):
        load_backend(folder)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, r"Speaker back-end folder '.*' has no speaker.json\."),
        ("{not json", r"speaker.json cannot be read as JSON"),
        ({"format": "emomon-bundle"}, r"is not a speaker back-end \(format must be 'emomon-speaker-backend'\)"),
        ({"format": "emomon-speaker-backend", "format_version": 7}, r"has format_version 7; this emomon reads 1"),
        ({"format": "emomon-speaker-backend", "format_version": 1}, r"has no weights.sha256"),
    ],
)
def test_a_bad_backend_folder_is_one_sentence(tmp_path: Path, manifest, message: str) -> None:
    if manifest is not None:
        (tmp_path / MANIFEST).write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        resolve_backend(str(tmp_path))


def test_backend_setting() -> None:
    assert resolve_backend("none") is None
    with pytest.raises(ValueError, match='backend must be "default", "none" or a speaker back-end folder'):
        SpeakerSettings(backend=" ")


def test_the_shipped_backend_is_what_its_manifest_says() -> None:
    backend = resolve_backend("default")
    manifest = json.loads((DEFAULT_FOLDER / MANIFEST).read_text())
    assert backend.keep.shape == (256, 256) and manifest["method"]["k"] == 10
    assert manifest["fitted_on"]["corpora"] == ["ased", "banglaser", "eyase", "indowave"]  # never the benchmark's
    assert np.isclose(np.trace(backend.keep), 256 - 10)


@pytest.mark.corpora
@pytest.mark.weights
def test_the_shipped_backend_separates_unseen_emodb_voices_better_than_raw_embeddings() -> None:
    """Emo-DB was never fitted on: six speakers, every emotion; same-speaker pairs stand further
    from different-speaker pairs after the back-end."""
    from emomon.model.audio import read_audio
    from emomon.model.speaker import SpeakerEncoder

    with (EMODB / "labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["speaker"] in ("03", "08", "09", "10", "11", "12")]
    wavs = [read_audio(EMODB / r["file"]) for r in rows[::2]]
    y = np.array([r["speaker"] for r in rows[::2]])
    raw = SpeakerEncoder().embed(wavs)
    after = SpeakerEncoder(backend=resolve_backend("default")).embed(wavs)
    assert separation(after, y) > separation(raw, y) + 0.05


@pytest.mark.corpora
@pytest.mark.weights
@pytest.mark.system
def test_fitting_command_writes_a_backend_from_a_small_real_corpus(tmp_path: Path) -> None:
    """Two Emo-DB speakers as a corpus of their own: embedded, cached, fitted, loadable."""
    corpus = tmp_path / "data" / "mini"
    (corpus / "wav").mkdir(parents=True)
    with (EMODB / "labels.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        every = list(reader)
        rows = [r for r in every if r["speaker"] == "03"][:5] + [r for r in every if r["speaker"] == "08"][:5]
        fields = reader.fieldnames
    for r in rows:
        shutil.copyfile(EMODB / r["file"], corpus / r["file"])
    with (corpus / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    out = subprocess.run(
        [sys.executable, "-m", "emomon.training.speaker_backend", "--data", str(tmp_path / "data"), "--corpora",
         "mini", "--k", "2", "--out", str(tmp_path / "backend")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    backend = load_backend(tmp_path / "backend")
    assert backend.info["fitted_on"] == {"corpora": ["mini"], "speakers": 2, "files": len(rows)}
    assert (tmp_path / "cache" / "emomon" / "speaker_study" / "mini.npz").exists()


@pytest.mark.weights
def test_a_missing_backend_folder_stops_replay_in_one_sentence(tmp_path: Path) -> None:
    from support.processes import run_cli

    (tmp_path / "bad.toml").write_text('[speakers]\nbackend = "nowhere"\n')
    done = run_cli("--config", "bad.toml", "replay", "--sample", "--speakers", "--speed", "0", "--no-dashboard",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and done.stderr == "emomon: Speaker back-end folder 'nowhere' has no speaker.json.\n"
