"""Training end to end: a tiny ComParE-layout dataset of real speech, a tiny HuBERT, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.data import EMODB, EMOTIONS9, load_clip, make_compare23

from emomon.cli import main
from emomon.model.audio import SAMPLE_RATE
from emomon.model.bundle import load_bundle
from emomon.model.predictor import Predictor
from emomon.training.datasets import load_dataset


@pytest.fixture(scope="module")
def compare23(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_compare23(tmp_path_factory.mktemp("compare23"))


def train_args(data: Path, encoder: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--config", str(Path(__file__).parent / "data" / "tiny_experiment.toml"), "train",
        "--dataset", "compare23", "--data", str(data), "--encoder", str(encoder),
        "--out", str(out), "--cache", str(cache), *extra,
    ]  # fmt: skip


@pytest.mark.corpora
def test_train_compare23_end_to_end(compare23: Path, tiny_hubert: Path, tmp_path: Path, capsys) -> None:
    out, cache, report = tmp_path / "bundle", tmp_path / "cache", tmp_path / "report"
    assert main(train_args(compare23, tiny_hubert, out, cache, "--report", str(report))) == 0
    printed = capsys.readouterr().out
    assert "compare23: 28 files (train 16, devel 8)" in printed and "saved bundle" in printed
    assert "fit 1/1 (compare23_split 1/1) done: epoch 3, loss" in printed  # progress in a log, not a terminal
    bundle = load_bundle(out)
    assert bundle.emotions == EMOTIONS9 and bundle.regressor.arch == 2
    m = bundle.metrics["evaluations"]["compare23_split"]  # the devel split: test labels are withheld
    assert set(m["spearman"]) == set(EMOTIONS9) and -1 <= m["spearman_mean"] <= 1
    assert m["n"] == 8 and m["folds"] == 1
    lo, hi = m["spearman_mean_ci95"]
    assert lo <= m["spearman_mean"] <= hi
    assert 1 <= bundle.metrics["final_training"]["epochs"] <= 3
    prov = json.loads((out / "bundle.json").read_text())["provenance"]
    assert prov["dataset"]["files_used"] == 28 and prov["config"]["train"]["epochs"] == 3
    assert prov["command"].startswith("emomon --config")
    for f in ("report.md", "metrics.json", "learning_curves.png"):
        assert (report / f).stat().st_size > 0
    # The bundle drives the Predictor directly, with the encoder it names.
    (p,) = Predictor.from_bundle(out, device="cpu").predict([load_clip("03a01Wa.wav")])
    assert tuple(p.shares) == EMOTIONS9


@pytest.mark.corpora
def test_a_softmax_head_trains_on_listener_shares(compare23: Path, tiny_hubert: Path, tmp_path: Path) -> None:
    """A softmax head gets a fitted temperature; on shares without intended emotions there is no
    ECE to report (this stopped with KeyError: 'calibration' before)."""
    config = tmp_path / "softmax.toml"
    tiny = (Path(__file__).parent / "data" / "tiny_experiment.toml").read_text()
    config.write_text(
        tiny.replace('head = "per_emotion"', 'head = "shared"').replace('output = ""', 'output = "softmax"')
    )
    args = train_args(compare23, tiny_hubert, tmp_path / "b", tmp_path / "c")
    args[1] = str(config)
    assert main(args) == 0
    m = load_bundle(tmp_path / "b").metrics["evaluations"]["compare23_split"]
    assert m["calibrated"]["temperature"] > 0 and "ece" not in m["calibrated"]


@pytest.mark.corpora
def test_training_is_reproducible_and_reuses_the_cache(compare23: Path, tiny_hubert: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert main(train_args(compare23, tiny_hubert, tmp_path / "a", cache)) == 0
    (folder,) = cache.iterdir()
    shards = sorted(folder.glob("shard-*.safetensors"))
    assert len(json.loads((folder / "index.json").read_text())["entries"]) == 28
    assert main(train_args(compare23, tiny_hubert, tmp_path / "b", cache)) == 0
    assert sorted(folder.glob("shard-*.safetensors")) == shards  # nothing extracted twice
    a = (tmp_path / "a" / "regressors.safetensors").read_bytes()
    b = (tmp_path / "b" / "regressors.safetensors").read_bytes()
    assert a == b


@pytest.mark.corpora
def test_bad_files_are_summarised_and_left_out(compare23: Path, tiny_hubert: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    import shutil

    shutil.copytree(compare23, data)
    (data / "wav" / "00001.wav").unlink()  # missing audio
    (data / "wav" / "00002.wav").write_bytes(b"RIFF not really a wav")  # corrupt audio
    lab = (data / "lab" / "train.csv").read_text().splitlines()
    lab[4] = lab[4].split(",")[0] + ",abc" + ",0.1" * 8  # a label that is not a number
    (data / "lab" / "train.csv").write_text("\n".join(lab) + "\n")
    assert main(train_args(data, tiny_hubert, tmp_path / "b", tmp_path / "cache")) == 0
    printed = capsys.readouterr().out
    assert "00001.wav: audio file is missing" in printed
    assert "Anger = 'abc' is not a number" in printed
    assert "00002.wav: Audio file" in printed and "cannot be read as audio" in printed
    assert load_bundle(tmp_path / "b").provenance["dataset"]["files_used"] == 25


@pytest.mark.corpora
def test_evaluate_command(compare23: Path, tiny_hubert: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    assert main(train_args(compare23, tiny_hubert, out, tmp_path / "cache")) == 0
    capsys.readouterr()
    args = ["evaluate", str(out), "--dataset", "compare23", "--data", str(compare23),
            "--cache", str(tmp_path / "cache"), "--report", str(tmp_path / "r")]  # fmt: skip
    assert main(args) == 0
    assert "compare23 devel: 8 files" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    saved = load_bundle(out).metrics["evaluations"]["compare23_split"]
    assert metrics["spearman"] == pytest.approx(saved["spearman"], abs=1e-3)  # same numbers both ways


def test_cli_errors_are_one_sentence(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", "compare23", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"emomon: Dataset path '{tmp_path / 'nope'}' does not exist."
    assert main(["train"]) == 2
    assert "--dataset and --data" in capsys.readouterr().err


def test_emodb_loader_targets(emodb_rows) -> None:
    ds = load_dataset("emodb", EMODB)
    assert len(ds.items) == 535 and len(ds.speakers()) == 10 and not ds.problems
    it = ds.items[0]
    assert sum(it.targets) == pytest.approx(1.0)
    row = next(r for r in emodb_rows if r["file"].endswith(it.path.name))
    assert it.targets[it.label] == pytest.approx(float(row["recognition_pct"]) / 100)
    onehot = load_dataset("emodb", EMODB, target="onehot").items[0].targets
    assert sorted(onehot) == [0.0] * 6 + [1.0]


def test_csv_manifest_with_speaker_split(tmp_path: Path) -> None:
    rows = ["path,speaker,happy,sad"]
    for i in range(10):
        sf.write(tmp_path / f"{i}.wav", np.zeros(8000, np.float32), SAMPLE_RATE)
        rows.append(f"{i}.wav,s{i % 5},0.{i},0.5")
    rows.append("missing.wav,s1,0.1,0.1")
    rows.append("0.wav,s1,1.5,0.1")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset("csv", tmp_path / "m.csv")
    assert ds.emotions == ("happy", "sad") and len(ds.items) == 10 and len(ds.problems) == 2
    devel = {it.speaker for it in ds.items if it.split == "devel"}
    train = {it.speaker for it in ds.items if it.split == "train"}
    assert devel and train and not devel & train  # speaker-independent


def test_fit_on_pooled_statistics_equals_fit_on_frames() -> None:
    """Architecture 3 trains on each file's statistics, pooled once and standardised per
    fold (experiment.Features.pools): the same model as pooling standardised frames."""
    import torch

    from emomon.model.normalize import feature_stats, frame_sums, stats_from_sums
    from emomon.model.regressor import normalise_pooled, pool_statistics
    from emomon.model.specs import RegressorSpec
    from emomon.training.settings import TrainSettings
    from emomon.training.train import Split, fit

    g = torch.Generator().manual_seed(0)
    spec = RegressorSpec.paper(arch=3, head="shared", pooling=("mean", "std", "p10", "p90"), ff_dims=(16,), dropout=0.2)
    emotions = ("a", "b", "c")

    def files(n: int) -> list[torch.Tensor]:
        return [torch.randn(int(t), 4, generator=g) * 3 + 1 for t in torch.randint(1, 40, (n,), generator=g)]

    train, views, devel = files(24), [files(24), files(24)], files(8)
    targets = torch.rand(24, 3, generator=g).softmax(1).numpy()
    devel_targets = torch.rand(8, 3, generator=g).softmax(1).numpy()
    mean, std = feature_stats(train)
    assert torch.allclose(stats_from_sums(torch.stack([frame_sums(f) for f in train]))[0], mean, atol=1e-5)

    def pool(fs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([pool_statistics(f[None], torch.tensor([f.shape[0]]), spec.pooling) for f in fs])

    def std_(fs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(f - mean) / std for f in fs]

    settings = TrainSettings(epochs=6, batch_size=8, lr=1e-2, patience=0, loss="ce")
    frames = fit(
        Split(std_(train), targets, views=[list(v) for v in zip(std_(views[0]), std_(views[1]))]),
        Split(std_(devel), devel_targets), emotions, spec, settings,
    )  # fmt: skip
    raw = torch.stack([pool(train), pool(views[0]), pool(views[1])])
    pooled = fit(
        Split(train, targets, pooled=normalise_pooled(raw, mean, std, spec.pooling)),
        Split(devel, devel_targets, pooled=normalise_pooled(pool(devel)[None], mean, std, spec.pooling)),
        emotions, spec, settings,
    )  # fmt: skip
    assert frames.best_epoch == pooled.best_epoch
    losses = [r["train_loss"] for r in pooled.history]
    assert [r["train_loss"] for r in frames.history] == pytest.approx(losses, rel=1e-4)
    for name, p in frames.bank.state_dict().items():
        assert torch.allclose(p, pooled.bank.state_dict()[name], atol=1e-4), name


def test_length_batches_hold_every_file_once_and_pad_little() -> None:
    """Sequence models train on batches of similar length: every file once per epoch, far
    less padding than random batches, and other batch mates from one epoch to the next."""
    import torch

    from emomon.training.train import length_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 450, size=203)
    gen = torch.Generator().manual_seed(0)
    first, second = length_batches(lengths, 16, gen), length_batches(lengths, 16, gen)
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(1 <= len(b) <= 16 for b in batches)

    def padding(batches) -> int:
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    order = rng.permutation(len(lengths))
    random_batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    assert padding(first) < 0.4 * padding(random_batches)
    assert {frozenset(b) for b in first} != {frozenset(b) for b in second}


def test_predict_returns_rows_in_input_order() -> None:
    """predict() batches files by length; each row is still its own file's, as alone."""
    import torch

    from emomon.model.bundle import new_bank
    from emomon.model.specs import RegressorSpec
    from emomon.training.train import predict

    torch.manual_seed(0)
    spec = RegressorSpec.paper(arch=2, head="shared", conv_channels=(8,), lstm_hidden=6, ff_dims=(5,), output="softmax")
    bank = new_bank(spec, ("a", "b", "c"), 4, 0)
    files = [torch.randn(int(t), 4) for t in (30, 3, 17, 50, 3, 9, 41)]
    together = predict(bank, files, batch_size=3)
    alone = np.concatenate([predict(bank, [f]) for f in files])
    assert together.shape == (7, 3)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=1e-3)  # rows differ: the order is checked
