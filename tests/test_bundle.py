"""Bundles: save -> load gives identical predictions; every corruption is one clear error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from support.models import make_bundle

from emomon.model.bundle import MANIFEST, WEIGHTS, load_bundle, save_bundle
from emomon.model.encoder import load_encoder
from emomon.model.errors import BundleError
from emomon.model.predictor import Predictor
from emomon.model.specs import EncoderSpec


@pytest.fixture(scope="module")
def encoder(tiny_hubert: Path):
    return load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")


@pytest.fixture()
def saved(encoder, tmp_path: Path) -> Path:
    return save_bundle(make_bundle(encoder), tmp_path / "bundle")


@pytest.mark.parametrize("arch,head", [(1, "per_emotion"), (2, "per_emotion"), (2, "shared")])
def test_round_trip_gives_identical_predictions(encoder, tmp_path: Path, clips, arch: int, head: str) -> None:
    bundle = make_bundle(encoder, arch=arch, head=head)
    before = Predictor(bundle, encoder, "cpu").predict(clips)
    save_bundle(bundle, tmp_path / "b")
    after = Predictor.from_bundle(tmp_path / "b", device="cpu", dtype="float32").predict(clips)
    for a, b in zip(before, after):
        assert a.shares == b.shares  # bit-identical
        assert (a.attention is None) == (b.attention is None)
    loaded = load_bundle(tmp_path / "b")
    assert loaded.emotions == bundle.emotions and loaded.regressor == bundle.regressor
    assert loaded.encoder == bundle.encoder and loaded.metrics == bundle.metrics


def test_ensemble_bundle_round_trips(encoder, tmp_path: Path, clips) -> None:
    bundle = make_bundle(encoder, arch=3, head="shared", output="softmax", ensemble=3)
    assert bundle.n_models == 3 and bundle.bank.n_outputs == 9
    before = Predictor(bundle, encoder, "cpu").predict(clips)
    save_bundle(bundle, tmp_path / "e")
    after = Predictor.from_bundle(tmp_path / "e", device="cpu", dtype="float32").predict(clips)
    assert [a.shares for a in before] == [b.shares for b in after]
    assert all(sum(a.shares.values()) == pytest.approx(1.0, abs=1e-5) for a in after)
    edit_manifest(
        tmp_path / "e", regressor={**json.loads((tmp_path / "e" / MANIFEST).read_text())["regressor"], "ensemble": 2}
    )
    with pytest.raises(BundleError, match="holds 3 regressors"):
        load_bundle(tmp_path / "e")


def test_temperature_is_saved_and_applied_by_the_predictor(encoder, tmp_path: Path, clips) -> None:
    """A calibrated bundle's shares are its raw softmax shares tempered: flatter for T > 1,
    the same top emotion, still a distribution."""
    bundle = make_bundle(encoder, arch=3, head="shared", output="softmax")
    raw = Predictor(bundle, encoder, "cpu").predict(clips)
    bundle.temperature = 2.5
    save_bundle(bundle, tmp_path / "t")
    assert json.loads((tmp_path / "t" / MANIFEST).read_text())["calibration"] == {"temperature": 2.5}
    tempered = Predictor.from_bundle(tmp_path / "t", device="cpu", dtype="float32").predict(clips)
    for a, b in zip(raw, tempered):
        pa, pb = np.array(list(a.shares.values())), np.array(list(b.shares.values()))
        assert pa.argmax() == pb.argmax() and pb.max() < pa.max() and pb.sum() == pytest.approx(1.0, abs=1e-5)
        want = pa ** (1 / 2.5)
        assert np.allclose(pb, want / want.sum(), atol=1e-5)
    edit_manifest(tmp_path / "t", calibration={"temperature": 0.0})
    with pytest.raises(BundleError, match="calibration.temperature must be a number between 0.05 and 20"):
        load_bundle(tmp_path / "t")


def test_manifest_is_readable_json_with_provenance(saved: Path) -> None:
    m = json.loads((saved / MANIFEST).read_text())
    assert m["format_version"] == 1 and len(m["emotions"]) == 9
    assert m["encoder"]["name"].endswith("hubert_layer0") and m["weights"]["file"] == WEIGHTS
    assert len(m["weights"]["sha256"]) == 64 and m["provenance"] == {"made_by": "tests"}


def edit_manifest(folder: Path, **changes) -> None:
    m = json.loads((folder / MANIFEST).read_text())
    for key, value in changes.items():
        if value is None:
            del m[key]
        else:
            m[key] = value
    (folder / MANIFEST).write_text(json.dumps(m))


CASES = {
    "missing folder": (lambda f: f.rename(f.with_name("gone")), "does not exist"),
    "file not folder": (lambda f: (f.rename(f.with_name("x")), f.write_text("")), "is not a folder"),
    "no manifest": (lambda f: (f / MANIFEST).unlink(), f"has no {MANIFEST}"),
    "bad json": (lambda f: (f / MANIFEST).write_text('{"format": '), "is not valid JSON"),
    "not a bundle": (lambda f: (f / MANIFEST).write_text("[]"), "is not an emomon model bundle"),
    "future version": (lambda f: edit_manifest(f, format_version=99), "format version 99"),
    "no emotions": (lambda f: edit_manifest(f, emotions=None), "has no 'emotions' entry"),
    "duplicate emotion": (lambda f: edit_manifest(f, emotions=["a"] * 9), "lists a name twice"),
    "unknown encoder key": (
        lambda f: edit_manifest(f, encoder={"kind": "ssl", "nme": "x"}),
        "Unknown setting 'bundle.json: encoder.nme'",
    ),
    "wrong regressor type": (
        lambda f: edit_manifest(f, regressor={"arch": "two"}),
        "'bundle.json: regressor.arch' must be 1 or 2",
    ),
    "short normalisation": (
        lambda f: edit_manifest(f, normalization={"mean": [0.0], "std": [1.0]}),
        "normalization.mean must list 32 numbers",
    ),
    "no weights": (lambda f: (f / WEIGHTS).unlink(), f"has no weights file {WEIGHTS}"),
    "truncated weights": (
        lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:-100]),
        "is corrupt: its SHA-256 differs",
    ),
    "garbage weights with their hash": (
        lambda f: (
            (f / WEIGHTS).write_bytes(b"\x00" * 64),
            edit_manifest(f, weights={"file": WEIGHTS, "sha256": hashlib.sha256(b"\x00" * 64).hexdigest()}),
        ),
        "is not a valid safetensors file",
    ),
    "no hash": (lambda f: edit_manifest(f, weights={"file": WEIGHTS}), "has no weights.sha256"),
    "path traversal": (
        lambda f: edit_manifest(f, weights={"file": "../../../../etc/hostname", "sha256": "0" * 64}),
        "weights.file '../../../../etc/hostname' points outside the bundle folder",
    ),
    "absolute path": (
        lambda f: edit_manifest(f, weights={"file": "/etc/hostname", "sha256": "0" * 64}),
        "weights.file must be a file name inside the bundle folder, not '/etc/hostname'",
    ),
    "symlink out of the folder": (
        lambda f: (
            (f / "w.safetensors").symlink_to("/etc/hostname"),
            edit_manifest(f, weights={"file": "w.safetensors", "sha256": "0" * 64}),
        ),
        "weights.file 'w.safetensors' points outside the bundle folder",
    ),
    "flipped byte": (lambda f: flip_last_byte(f / WEIGHTS), "is corrupt: its SHA-256 differs"),
    "emotion count": (
        lambda f: edit_manifest(f, emotions=[f"e{i}" for i in range(7)]),
        "holds 9 regressors but bundle.json lists 7 emotions",
    ),
    "shape mismatch": (
        lambda f: edit_manifest(
            f, regressor={**json.loads((f / MANIFEST).read_text())["regressor"], "lstm_hidden": 20}
        ),
        "has shape",
    ),
    "wrong input dim": (
        lambda f: edit_manifest(f, input_dim=16, normalization={"mean": [0.0] * 16, "std": [1.0] * 16}),
        "tensor 'convs__0__weight' has shape (9, 24, 32, 3)",
    ),
}


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", sorted(CASES))
def test_corruption_gives_one_clear_sentence(saved: Path, case: str) -> None:
    damage, message = CASES[case]
    damage(saved)
    with pytest.raises(BundleError) as err:
        load_bundle(saved)
    text = str(err.value)
    assert message in text
    assert "\n" not in text and text.endswith(".")
    assert str(saved) in text  # names the bundle folder or a file in it


def test_shared_head_output_count_is_checked(encoder, tmp_path: Path) -> None:
    folder = save_bundle(make_bundle(encoder, head="shared"), tmp_path / "b")
    edit_manifest(folder, emotions=[f"e{i}" for i in range(7)])
    with pytest.raises(BundleError, match="gives 9 outputs, but bundle.json lists 7 emotions"):
        load_bundle(folder)


def test_no_pickle_in_a_bundle(saved: Path) -> None:
    for f in saved.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", f"{f.name} looks like a pickle or a torch zip"


def test_encoder_mismatch_is_refused(encoder, saved: Path) -> None:
    egemaps = load_encoder(EncoderSpec(kind="egemaps", name="eGeMAPSv02"))
    with pytest.raises(BundleError, match="take 32-dimensional features, but encoder"):
        Predictor(load_bundle(saved), egemaps, "cpu")


def test_predictions_are_finite_numbers(saved: Path, clips) -> None:
    out = Predictor.from_bundle(saved, device="cpu").predict(clips)
    assert all(np.isfinite(list(p.shares.values())).all() for p in out)


def test_refused_weights_outside_the_folder_are_never_opened(saved: Path, tmp_path: Path) -> None:
    """A weights file outside the folder is refused before anything reads it: here it is a
    FIFO, on which any open() would block the test forever."""
    import os

    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    edit_manifest(saved, weights={"file": f"../{fifo.name}", "sha256": "0" * 64})
    with pytest.raises(BundleError, match="points outside the bundle folder"):
        load_bundle(saved)
