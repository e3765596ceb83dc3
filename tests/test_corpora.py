"""Two corpora with different label sets: loading, merging, masks, protocols, augmentation,
the masked loss, and the two-corpus recipe end to end with a tiny HuBERT."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.data import EMODB, NEMO, RAVDESS, load_clip, mini_corpus

from emomon.cli import main
from emomon.model.audio import SAMPLE_RATE, read_audio
from emomon.model.bundle import load_bundle
from emomon.training.augment import augment, gain, noise, perturb, telephone
from emomon.training.datasets import RAVDESS_EMOTIONS, load_dataset, merge
from emomon.training.protocols import Protocol
from emomon.training.train import masked_loss

NINE = ("anger", "boredom", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "training" / "experiments"


@pytest.fixture(scope="module")
def both():
    return merge([load_dataset("emodb", EMODB), load_dataset("ravdess", RAVDESS)])


@pytest.mark.corpora
def test_ravdess_loader() -> None:
    ds = load_dataset("ravdess", RAVDESS)
    assert len(ds.items) == 1440 and len(ds.speakers()) == 24 and not ds.problems
    assert ds.emotions == ("neutral", "calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise")
    for it in ds.items[:60]:
        assert sum(it.targets) == 1.0 and it.targets[it.label] == 1.0
    # The label agrees with the emotion code in the file name (third field).
    codes = {"01": "neutral", "05": "anger", "08": "surprise"}
    for it in ds.items:
        code = it.path.stem.split("-")[2]
        if code in codes:
            assert ds.emotions[it.label] == codes[code]


@pytest.mark.corpora
def test_merge_spreads_targets_onto_the_union_with_masks(both) -> None:
    assert both.emotions == NINE and len(both.items) == 535 + 1440
    assert both.label_sets["emodb"] == load_dataset("emodb", EMODB).emotions
    emodb = [it for it in both.items if it.corpus == "emodb"]
    ravdess = [it for it in both.items if it.corpus == "ravdess"]
    e_mask, r_mask = dict(zip(NINE, emodb[0].mask)), dict(zip(NINE, ravdess[0].mask))
    assert e_mask["boredom"] and not e_mask["calm"] and not e_mask["surprise"]
    assert r_mask["calm"] and r_mask["surprise"] and not r_mask["boredom"]
    for it in emodb[:50] + ravdess[:50]:
        assert sum(it.targets) == pytest.approx(1.0)
        assert all(v == 0.0 for v, m in zip(it.targets, it.mask) if not m)  # nothing outside its label set
        assert it.targets[it.label] == max(it.targets)  # the intended emotion, remapped to the union
    assert {it.speaker.split(":")[0] for it in both.items} == {"emodb", "ravdess"}  # speakers kept apart


@pytest.mark.corpora
def test_protocols_are_speaker_independent(both) -> None:
    corpus = np.array([it.corpus for it in both.items])
    speaker = np.array([it.speaker for it in both.items])
    loso = Protocol.parse("emodb:loso")
    folds = loso.folds(both)
    assert loso.name == "emodb_loso" and len(folds) == 10
    assert [both.emotions[c] for c in loso.classes(both)] == sorted(load_dataset("emodb", EMODB).emotions)
    for f in folds:
        parts = [set(speaker[f.train]), set(speaker[f.devel]), set(speaker[f.test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set(corpus[f.test]) == {"emodb"} and "ravdess" in set(corpus[f.train])  # the other corpus trains
    # every Emo-DB file is tested exactly once
    assert sorted(np.concatenate([f.test for f in folds])) == list(np.flatnonzero(corpus == "emodb"))
    cross = Protocol.parse("emodb>ravdess")
    (f,) = cross.folds(both)
    assert cross.name == "emodb_to_ravdess" and set(corpus[f.train]) == {"emodb"} == set(corpus[f.devel])
    shared = [both.emotions[c] for c in cross.classes(both)]
    assert shared == ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]
    assert {both.emotions[both.items[i].label] for i in f.test} == set(shared)  # no calm or surprise
    k = Protocol.parse("ravdess:kfold6").folds(both)
    assert len(k) == 6 and all(len(set(speaker[x.test])) == 4 for x in k)


@pytest.mark.corpora
def test_nemo_loader() -> None:
    ds = load_dataset("nemo", NEMO)
    assert len(ds.items) == 4481 and len(ds.speakers()) == 9 and not ds.problems
    assert ds.emotions == ("anger", "fear", "happiness", "neutral", "sadness", "surprise")
    for it in ds.items:
        assert it.targets[it.label] == 1.0 and sum(it.targets) == 1.0
        assert ds.emotions[it.label].startswith(it.path.stem.split("_")[1][:5])  # SPEAKER_EMOTION_N ("surprised")
    assert read_audio(ds.items[0].path).size > SAMPLE_RATE  # Ogg Opus through libsndfile


@pytest.mark.corpora
def test_leave_one_corpus_out(both) -> None:
    three = merge([load_dataset("emodb", EMODB), load_dataset("ravdess", RAVDESS), load_dataset("nemo", NEMO)])
    corpus = np.array([it.corpus for it in three.items])
    speaker = np.array([it.speaker for it in three.items])
    p = Protocol.parse("emodb+nemo>ravdess")
    (f,) = p.folds(three)
    assert p.name == "emodb_nemo_to_ravdess"
    assert set(corpus[f.train]) == {"emodb", "nemo"} == set(corpus[f.devel]) and set(corpus[f.test]) == {"ravdess"}
    assert not set(speaker[f.train]) & set(speaker[f.devel])
    # RAVDESS's classes that Emo-DB or nEMO label: all but calm
    assert [three.emotions[c] for c in p.classes(three)] == [e for e in sorted(RAVDESS_EMOTIONS) if e != "calm"]
    assert {three.items[i].label for i in f.test} == set(p.classes(three))
    assert [three.emotions[c] for c in Protocol.parse("ravdess+nemo>emodb").classes(three)] == [
        "anger", "disgust", "fear", "happiness", "neutral", "sadness"
    ]  # fmt: skip
    with pytest.raises(Exception, match="tests on a corpus it trains on"):
        Protocol.parse("emodb+nemo>nemo")


@pytest.mark.parametrize("bad", ["emodb", "emodb:loo", "a>", "ravdess:kfold1", "+a>b"])
def test_bad_protocol_is_one_sentence(bad: str) -> None:
    from emomon.training.datasets import DatasetError

    with pytest.raises(DatasetError, match="protocol"):
        Protocol.parse(bad)


@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_masked_loss_ignores_emotions_a_corpus_cannot_label(kind: str) -> None:
    y = torch.tensor([[0.2, 0.5, 0.3]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 0.0]])
    m = torch.tensor([[True, True, False]])
    masked_loss(y, t, m, kind).backward()
    assert y.grad[0, 2] == 0 and y.grad[0, 1] < 0  # the unlabelled emotion is neither pushed up nor down
    same = masked_loss(torch.tensor([[0.2, 0.5, 0.9]]), t, m, kind)  # its value does not matter
    assert same.item() == pytest.approx(masked_loss(y.detach(), t, m, kind).item(), abs=1e-6)


@pytest.mark.corpora
def test_perturbations_do_what_they_say() -> None:
    x = load_clip("03a01Wa.wav")
    assert np.allclose(gain(x, -12), x * 10 ** (-12 / 20))
    for color in ("white", "pink"):
        y = noise(x, 20.0, color, np.random.default_rng(0))
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
        assert snr == pytest.approx(20.0, abs=0.01)
    spec = np.abs(np.fft.rfft(telephone(x))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    assert spec[f > 4100].sum() < 1e-4 * spec.sum()  # nothing left above the 8 kHz Nyquist
    assert np.array_equal(perturb(x, "white:20", seed=3), perturb(x, "white:20", seed=3))


@pytest.mark.corpora
def test_augmentation_is_seeded() -> None:
    from emomon.training.settings import AugmentSettings

    x = load_clip("03a01Wa.wav")
    s = AugmentSettings(views=1, noise=1.0, telephone=0.5, reverb=0.5)
    a = augment(x, s, np.random.default_rng([0, 1, 2]))
    assert np.array_equal(a, augment(x, s, np.random.default_rng([0, 1, 2])))
    assert not np.array_equal(a, augment(x, s, np.random.default_rng([0, 1, 3])))
    assert a.dtype == np.float32 and len(a) == len(x)
    # The codec and the excerpt come after the older draws: with both off, the same copy.
    both_off = AugmentSettings(views=1, noise=1.0, telephone=0.5, reverb=0.5, codec=0.0, crop=0.0)
    assert np.array_equal(a, augment(x, both_off, np.random.default_rng([0, 1, 2])))
    short = augment(x, AugmentSettings(views=1, noise=0.0, crop=1.0, crop_s=(1.0, 1.5)), np.random.default_rng(0))
    assert SAMPLE_RATE <= len(short) <= 1.5 * SAMPLE_RATE


@pytest.mark.corpora
def test_opus_round_trip_keeps_the_speech_and_its_timing() -> None:
    from emomon.training.augment import opus

    x = load_clip("03a01Wa.wav")
    y = opus(x)
    assert len(y) == len(x) and y.dtype == np.float32
    assert 0.95 < np.corrcoef(x, y)[0, 1] < 1.0  # lossy, but aligned sample for sample (shifted by 1 ms: < 0.9)
    assert np.corrcoef(x[16:], y[:-16])[0, 1] < 0.9


@pytest.mark.corpora
def test_two_corpus_hubert_recipe_end_to_end(tiny_hubert: Path, tmp_path: Path, capsys) -> None:
    """The shipped HuBERT-Large experiment file, run on a few real files of both corpora with
    a tiny HuBERT in place of the real weights: every evaluation lands in bundle.json."""
    emodb = mini_corpus(tmp_path / "emodb", EMODB, per_speaker=4, speakers=3)
    ravdess = mini_corpus(tmp_path / "ravdess", RAVDESS, per_speaker=6, speakers=3)
    out, report = tmp_path / "bundle", tmp_path / "report"
    args = [
        "--config", str(EXPERIMENTS / "default_hubert_large.toml"), "train",
        "--data", f"{emodb},{ravdess}", "--encoder", str(tiny_hubert), "--epochs", "2",
        "--out", str(out), "--cache", str(tmp_path / "cache"), "--report", str(report),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "emodb+ravdess: 30 files" in printed and "saved bundle" in printed
    bundle = load_bundle(out)
    assert bundle.emotions == NINE and bundle.encoder.kind == "ssl" and bundle.regressor.arch == 3
    ev = bundle.metrics["evaluations"]
    assert set(ev) == {"emodb_loso", "ravdess_loso", "emodb_to_ravdess", "ravdess_to_emodb"}
    for name, m in ev.items():
        assert {"uar", "accuracy", "spearman_mean", "n", "folds", "uar_ci95", "calibration"} <= set(m), name
        assert 0 <= m["uar"] <= 1 and 0 <= m["calibration"]["ece"] <= 1
    assert ev["emodb_loso"]["n"] == 12 and ev["emodb_loso"]["folds"] == 3
    with (emodb / "labels.csv").open() as f:
        shared = sum(r["emotion"] != "boredom" for r in csv.DictReader(f))  # RAVDESS has no boredom
    assert ev["ravdess_to_emodb"]["n"] == shared
    assert len(ev["emodb_loso"]["confusion"]) == 7 and len(ev["ravdess_loso"]["confusion"]) == 8
    assert len(ev["emodb_to_ravdess"]["confusion"]) == 6
    for f in ("report.md", "metrics.json", "confusion.png", "calibration.png", "learning_curves.png"):
        assert (report / f).stat().st_size > 0
    assert json.loads((report / "metrics.json").read_text()) == ev
