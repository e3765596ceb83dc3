"""The seven corpora through one loader: label sets, confound subsets, linked speakers,
protocols that test around the confounds, corpus balance and temperature calibration."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from support.data import ASED, BANGLASER, EMODB, EYASE, INDOWAVE, NEMO, RAVDESS, mini_corpus

from emomon.model.regressor import temper
from emomon.training.datasets import CORPORA, CORPUS_INFO, load_dataset, merge
from emomon.training.metrics import fit_temperature
from emomon.training.protocols import Protocol
from emomon.training.train import balance_weights, masked_loss

FOLDERS = dict(emodb=EMODB, ravdess=RAVDESS, nemo=NEMO, ased=ASED, banglaser=BANGLASER, eyase=EYASE, indowave=INDOWAVE)


@pytest.fixture(scope="module")
def seven():
    return merge([load_dataset(c, FOLDERS[c]) for c in CORPORA])


def test_every_corpus_has_a_record() -> None:
    assert set(CORPUS_INFO) == set(CORPORA) == set(FOLDERS)


@pytest.mark.corpora
@pytest.mark.parametrize(
    "corpus,files,speakers,emotions",
    [
        ("ased", 2407, 65, ("anger", "fear", "happiness", "neutral", "sadness")),
        ("banglaser", 1652, 49, ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")),
        ("eyase", 578, 6, ("anger", "happiness", "neutral", "sadness")),
        ("indowave", 240, 10, ("disgust", "happiness", "neutral", "surprise")),  # disappointment left out
    ],
)
def test_new_corpora_load_with_their_own_label_sets(corpus, files, speakers, emotions) -> None:
    ds = load_dataset(corpus, FOLDERS[corpus])
    assert ds.emotions == emotions and len(ds.items) == files and len(ds.speakers()) == speakers
    assert not ds.problems  # a label left out on purpose is no problem
    with (FOLDERS[corpus] / "labels.csv").open() as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    for it in ds.items[::37]:
        row = rows[str(it.path.relative_to(FOLDERS[corpus]))]
        assert ds.emotions[it.label] == row["emotion"] and it.speaker == row["speaker"]
        assert it.targets[it.label] == 1.0 and sum(it.targets) == 1.0


@pytest.mark.corpora
def test_subsets_and_linked_speakers() -> None:
    ased = load_dataset("ased", ASED)
    assert Counter(it.subset for it in ased.items) == {"emotion_specific": 1792, "common": 615}
    assert {it.unit for it in ased.items if it.speaker in ("39", "45", "52")} == {"39+45+52"}
    assert {it.unit for it in ased.items if it.speaker == "23"} == {"23+25"}
    assert {it.unit for it in ased.items if it.speaker == "01"} == {"01"}
    bangla = load_dataset("banglaser", BANGLASER)
    parts = Counter((it.subset, bangla.emotions[it.label]) for it in bangla.items)
    assert {e for (part, e) in parts if part == "extended"} == {"disgust", "fear"}  # only the extended actors
    assert sum(n for (part, _), n in parts.items() if part == "main") == 1428


def test_a_bad_corpus_folder_is_one_sentence(tmp_path) -> None:
    from emomon.training.datasets import DatasetError

    (tmp_path / "labels.csv").write_text("file,speaker,emotion\na.opus,01,anger\n")
    with pytest.raises(DatasetError, match="has no 'text_kind' column"):
        load_dataset("ased", tmp_path)
    ds = load_dataset("eyase", tmp_path)
    assert ds.problems == [(str(tmp_path / "a.opus"), "audio file is missing")]


@pytest.mark.corpora
def test_subset_protocols_test_around_the_confounds(seven) -> None:
    corpus = np.array([it.corpus for it in seven.items])
    units = np.array([it.unit for it in seven.items])
    p = Protocol.parse("ased.common:kfold5")
    assert p.name == "ased_common_kfold5" and p.subset == "common"
    folds = p.folds(seven)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == [i for i, it in enumerate(seven.items) if it.corpus == "ased" and it.subset == "common"]
    for f in folds:  # no test speaker's file trains, not even its emotion-specific sentences
        assert not set(units[f.test]) & set(units[f.train]) and not set(units[f.test]) & set(units[f.devel])
        assert {"emodb", "indowave"} <= set(corpus[f.train])
    linked = [f for f in folds if "ased:39+45+52" in set(units[f.test])]
    assert len(linked) == 1 and not {"ased:39", "ased:45"} & {
        it.speaker for i in linked[0].train for it in [seven.items[i]]
    }
    ext = Protocol.parse("banglaser.extended:loso")
    assert [seven.emotions[c] for c in ext.classes(seven)] == ["disgust", "fear"]
    loco = Protocol.parse("*>banglaser.main")
    (f,) = loco.folds(seven)
    assert loco.name == "rest_to_banglaser_main" and "banglaser" not in set(corpus[f.train])
    assert set(corpus[f.train]) == set(CORPORA) - {"banglaser"}
    assert {seven.items[i].subset for i in f.test} == {"main"} and len(f.test) == 1428
    assert [seven.emotions[c] for c in loco.classes(seven)] == [
        "anger", "happiness", "neutral", "sadness", "surprise"
    ]  # fmt: skip
    with pytest.raises(Exception, match="has no 'shouted' files"):
        Protocol.parse("ased.shouted:loso").folds(seven)


@pytest.mark.corpora
def test_joint_kfold_tests_every_corpus_in_k_fits(seven) -> None:
    joint = Protocol.parse("emodb+ased.common+eyase:kfold5")
    assert [p.name for p in joint.parts] == ["emodb_kfold5", "ased_common_kfold5", "eyase_kfold5"]
    folds = joint.folds(seven)
    units = np.array([it.unit for it in seven.items])
    corpus = np.array([it.corpus for it in seven.items])
    assert len(folds) == 5
    for g, f in enumerate(folds):  # fold g is group g of every part alone, in one fit
        assert sorted(f.test) == sorted(np.concatenate([p.folds(seven)[g].test for p in joint.parts]))
        assert not set(units[f.test]) & set(units[f.train]) and not set(units[f.devel]) & set(units[f.train])
        assert {"emodb", "ased", "eyase"} <= set(corpus[f.devel])  # every part's next group picks the epoch
        assert (corpus[f.train] == "ravdess").sum() == sum(it.corpus == "ravdess" for it in seven.items)
    for p in joint.parts:  # each part's files are tested exactly once
        tested = np.concatenate([f.test for f in folds])
        assert sorted(tested[p.tests([seven.items[i] for i in tested])]) == sorted(np.flatnonzero(p.tests(seven.items)))
    for bad in ("emodb+emodb:kfold5", "emodb+ravdess:loso", "emodb+ravdess:kfold1"):
        with pytest.raises(Exception, match="names a corpus twice|is not CORPUS|at least 2 folds"):
            Protocol.parse(bad)


def test_balance_weights() -> None:
    corpora = ["a"] * 6 + ["b"] * 2
    speakers = ["1", "1", "1", "1", "2", "2", "3", "4"]
    w = balance_weights(corpora, speakers, "corpus")
    assert w.mean() == pytest.approx(1.0) and w[:6].sum() == pytest.approx(w[6:].sum())
    w = balance_weights(corpora, speakers, "speaker")
    assert w[:4].sum() == pytest.approx(w[4:6].sum()) == pytest.approx(w[6]) == pytest.approx(w[7])
    assert balance_weights(corpora, speakers, "none") is None
    # a weight scales a file's loss: weights (2, 0) give the first file's loss alone
    y, t, m = (
        torch.tensor([[0.7, 0.3], [0.1, 0.9]]),
        torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
        torch.ones(2, 2, dtype=bool),
    )
    assert masked_loss(y, t, m, "ce", torch.tensor([2.0, 0.0])).item() == pytest.approx(-np.log(0.7), rel=1e-5)


def test_temperature_is_recovered_and_keeps_the_top_emotion() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    truth = torch.tensor(logits / 2.0).softmax(-1).numpy()  # the labels follow logits / 2 ...
    labels = np.array([rng.choice(5, p=p) for p in truth])
    over = torch.tensor(logits).softmax(-1)  # ... the model says logits: over-confident by T = 2
    t = fit_temperature(over.numpy(), np.eye(5)[labels], np.ones((4000, 5), bool))
    assert 1.8 < t < 2.2
    flat = temper(over, t)
    assert torch.equal(flat.argmax(-1), over.argmax(-1)) and torch.allclose(flat.sum(-1), torch.ones(4000).double())
    assert torch.equal(temper(over, 1.0), over)


def test_probe_learns_what_is_linear_and_respects_the_masks() -> None:
    from emomon.training.probe import probe_predict

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    means = torch.randn(300, 6, generator=g) + 3 * torch.nn.functional.one_hot(labels, 6).float()
    targets = np.eye(4, dtype=np.float32)[labels.numpy()]
    masks = np.tile([True, True, True, False], (300, 1))  # the fourth emotion is never labelled
    train, test = np.arange(200), np.arange(200, 300)
    pred = probe_predict(means, targets, masks, train, test)
    assert pred.shape == (100, 4) and np.allclose(pred.sum(1), 1.0, atol=1e-5)
    assert (pred[:, :3].argmax(1) == labels[200:].numpy()).mean() > 0.9


@pytest.mark.corpora
def test_seven_corpus_recipe_end_to_end(tmp_path, capsys) -> None:
    """The shipped seven-corpus recipe (training/experiments/default_v4.toml: augmentation,
    perturbations, probe, calibration) on a few real files of every corpus with a tiny
    Whisper, its protocols cut to what a handful of speakers allows: every evaluation lands
    in bundle.json with its probe and temperature, and the bundle applies the temperature."""
    import tomllib

    from support.models import save_tiny_whisper

    from emomon.cli import main
    from emomon.model.bundle import load_bundle

    folders = []
    for c in CORPORA:
        ased = c == "ased"  # each emotion in both kinds of sentence
        distinct = ("text_kind", "emotion") if ased else ("emotion",)
        mini_corpus(tmp_path / c, FOLDERS[c], per_speaker=10 if ased else 4, speakers=3, distinct=distinct)
        folders.append(str(tmp_path / c))
    recipe = (Path(__file__).resolve().parents[1] / "training" / "experiments" / "default_v4.toml").read_text()
    assert tomllib.loads(recipe)["evaluation"]["probe"] is True
    protocols = '["ased.common+eyase:kfold3", "*>indowave", "*>banglaser.main"]'
    start = recipe.index("protocols = [")
    recipe = recipe[:start] + f"protocols = {protocols}\n" + recipe[recipe.index("]", start) + 1 :]
    (tmp_path / "recipe.toml").write_text(recipe)
    out = tmp_path / "bundle"
    args = [
        "--config", str(tmp_path / "recipe.toml"), "train", "--data", ",".join(folders),
        "--encoder", str(save_tiny_whisper(tmp_path / "whisper")), "--layer", "1", "--epochs", "2",
        "--out", str(out), "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert main([*args, "--features-only"]) == 0  # the extraction alone, as on a GPU machine
    printed = capsys.readouterr().out
    assert "features of 87 files" in printed and not out.exists()  # 92, less ASED's emotion-specific sentences
    index = json.loads(next((tmp_path / "cache").glob("*/index.json")).read_text())
    assert len(index["entries"]) == 87 * (1 + 2 + 5)  # clean, two augmented views, five perturbations
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "embedding" not in printed  # everything came from the cache
    assert "linear probe UAR" in printed and "saved bundle" in printed
    bundle = load_bundle(out)
    ev = bundle.metrics["evaluations"]
    assert set(ev) == {"ased_common_kfold3", "eyase_kfold3", "rest_to_indowave", "rest_to_banglaser_main"}
    for name, m in ev.items():
        assert 0 <= m["probe"]["uar"] <= 1 and 0.05 <= m["calibrated"]["temperature"] <= 20, name
        assert set(m["robustness"]) == {"white:20", "pink:20", "gain:-12", "gain:12", "telephone"}
        assert 0 <= m["robustness"]["telephone"]["top_kept"] <= 1
    assert len(ev["rest_to_indowave"]["confusion"]) == 4  # IndoWave's four, disappointment left out
    assert len(ev["ased_common_kfold3"]["confusion"]) == 5 and ev["ased_common_kfold3"]["n"] == 15
    assert len(ev["eyase_kfold3"]["confusion"]) == 4 and ev["eyase_kfold3"]["n"] == 12  # both in the same 3 fits
    within = ev["ased_common_kfold3"]["calibrated"]["temperatures"]
    assert len(within) == 3 and within == ev["eyase_kfold3"]["calibrated"]["temperatures"]
    assert bundle.temperature == pytest.approx(float(np.median(within)))
    assert bundle.provenance["dataset"]["speakers"] == 21 and "IndoWaveSentiment" in bundle.provenance["licence"]
