"""`[train] adapt`: the encoder's top trains beside the head (training/adapt.py), on real
Emo-DB speech with a tiny Whisper built here; checkpoints every epoch, and a run killed
mid-way and resumed gives the weights the uninterrupted run gives."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from support.data import REPO, make_compare23
from support.models import save_tiny_whisper

from emomon.cli import main
from emomon.config import Config
from emomon.model.bundle import ADAPTER, WEIGHTS, load_bundle
from emomon.model.errors import ConfigError
from emomon.model.predictor import Predictor
from emomon.model.specs import EncoderSpec, RegressorSpec
from emomon.training.adapt import mask_frames
from emomon.training.checkpoints import Checkpoints
from emomon.training.encoder_top import start_layer, trained_layers
from emomon.training.settings import EvaluationSettings, TrainSettings

EXPERIMENT = """
[train.encoder]
kind = "whisper"
name = "{encoder}"
layer = 2

[train.regressor]
arch = 3
head = "shared"
pooling = ["mean", "std", "p50"]
ff_dims = [16]
dropout = 0.1
output = "softmax"
ensemble = 2

[train]
epochs = 3
batch_size = 8
lr = 1e-3
patience = 0
normalization = "corpus"
loss = "ce"
adapt = "{adapt}"
adapt_layers = {layers}
adapt_epochs = {epochs}
adapt_batch_size = 4
lora_rank = 2
encoder_lr = 1e-2
head_lr = 1e-3

[evaluation]
probe = {probe}

[augment]
views = 1

[runtime]
device = "cpu"
dtype = "float32"
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_compare23(tmp_path_factory.mktemp("compare23"), n_train=12, n_devel=6, n_test=4)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


def experiment(
    folder: Path, encoder: Path, adapt: str = "lora", layers: str = "[]", epochs: int = 3, probe: bool = True
) -> Path:
    path = folder / f"adapt_{adapt}_{epochs}_{probe}.toml"
    text = EXPERIMENT.format(encoder=encoder, adapt=adapt, layers=layers, epochs=epochs, probe=str(probe).lower())
    path.write_text(text)
    return path


def train(config: Path, data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--config", str(config), "train", "--dataset", "compare23", "--data", str(data),
        "--out", str(out), "--cache", str(cache), *extra,
    ]  # fmt: skip


def weights(bundle: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {f"head.{k}": v for k, v in load_file(bundle / WEIGHTS).items()}
    if (bundle / ADAPTER).exists():
        out |= {f"adapter.{k}": v for k, v in load_file(bundle / ADAPTER).items()}
    return out


def checkpoint_epoch(folder: Path) -> int:
    """The last epoch any checkpoint in `folder` holds (0 before the first)."""
    from safetensors import safe_open

    epoch = 0
    for path in folder.glob("*.safetensors"):
        try:
            with safe_open(path, framework="pt") as f:
                epoch = max(epoch, json.loads(f.metadata()["meta"])["epoch"])
        except Exception:  # noqa: BLE001  (being replaced right now: read it on the next poll)
            pass
    return epoch


@pytest.mark.corpora
@pytest.mark.system
def test_a_killed_adapted_run_resumes_to_the_weights_of_an_uninterrupted_one(data, whisper, tmp_path) -> None:
    epochs = 60
    config = experiment(tmp_path, whisper, epochs=epochs)
    cache = tmp_path / "cache"
    assert main(train(config, data, tmp_path / "whole", cache)) == 0
    whole = weights(tmp_path / "whole")
    meta = json.loads((tmp_path / "whole" / "bundle.json").read_text())
    assert meta["adapter"]["kind"] == "lora" and meta["adapter"]["layers"] == [0, 1]
    assert meta["metrics"]["evaluations"]["compare23_split"]["adapt_epochs"][0] > 0  # adapting was chosen

    # The same run in its own process, killed once it has checkpointed a few epochs
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emomon.cli", *train(config, data, out, cache)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    checkpoints = Path(f"{out}.checkpoints")
    deadline = time.monotonic() + 240
    while checkpoint_epoch(checkpoints) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_at = checkpoint_epoch(checkpoints)
    assert proc.returncode == -signal.SIGKILL and 3 <= killed_at < epochs, "the run was not killed mid-way"
    assert not (out / "bundle.json").exists()

    assert main(train(config, data, out, cache, "--resume")) == 0
    resumed = weights(out)
    assert resumed.keys() == whole.keys()
    for name, t in whole.items():
        assert torch.equal(resumed[name], t), name
    history = json.loads((out / "bundle.json").read_text())["metrics"]["evaluations"]["compare23_split"]
    assert history == meta["metrics"]["evaluations"]["compare23_split"]


@pytest.mark.corpora
def test_resuming_another_configuration_is_one_sentence(data, whisper, tmp_path, capsys) -> None:
    cache, out = tmp_path / "cache", tmp_path / "model"
    assert main(train(experiment(tmp_path, whisper, epochs=1), data, out, cache)) == 0
    capsys.readouterr()
    assert main(train(experiment(tmp_path, whisper, epochs=2), data, out, cache, "--resume")) == 2
    err = capsys.readouterr().err
    assert "are of other settings than this run's" in err and "Traceback" not in err


@pytest.mark.corpora
def test_fine_tuned_layers_ship_in_the_bundle_and_the_predictor_runs_them(data, whisper, tmp_path) -> None:
    out = tmp_path / "model"
    config = experiment(tmp_path, whisper, adapt="layers", layers="[2]", epochs=3)
    assert main(train(config, data, out, tmp_path / "cache")) == 0
    bundle = load_bundle(out)
    assert bundle.adapter is not None and bundle.adapter.kind == "layers" and bundle.adapter.spec.layers == (1,)
    assert all(k.startswith("layers.1.") for k in bundle.adapter.state)
    # the shipped layer is the trained one, not the base: its change from the base, in float16
    from safetensors.torch import load_file

    from emomon.model.whisper import load_whisper

    assert bundle.adapter.spec.delta and load_file(out / ADAPTER)["layers.1.fc1.weight"].dtype == torch.float16
    base, _, _ = load_whisper(bundle.encoder)
    change = bundle.adapter.state["layers.1.fc1.weight"]
    assert change.abs().max() > 0  # it did train (a snapshot that followed the weights would give 0)
    p = Predictor.from_bundle(out, "cpu", "float32")
    assert p.describe()["adapter"] == "fine-tuned layer 2"
    assert torch.equal(p.encoder.model.layers[1].fc1.weight.detach(), base.layers[1].fc1.weight.detach() + change)
    shares = p.predict([np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32)])
    assert np.isclose(sum(shares[0].shares.values()), 1.0, atol=1e-4)


def test_adapting_needs_a_whisper_layer_and_the_pooled_head() -> None:
    whisper = EncoderSpec(kind="whisper", name="openai/whisper-base", layer=3)
    cfg = replace(Config(), encoder=whisper, regressor=RegressorSpec(), train=TrainSettings(adapt="lora"))
    assert trained_layers(cfg) == (1, 2, 3) and start_layer(cfg) == 0
    top3 = replace(cfg, train=TrainSettings(adapt="layers", adapt_layers=(3,)))
    assert trained_layers(top3) == (3,) and start_layer(top3) == 2
    refused = {
        "a HuBERT": replace(cfg, encoder=EncoderSpec.paper()),
        "the last layer": replace(cfg, encoder=replace(whisper, layer="last")),
        "a layer above the one read": replace(cfg, train=TrainSettings(adapt="lora", adapt_layers=(4,))),
        "the paper's LSTM": replace(cfg, regressor=RegressorSpec.paper()),
    }
    for what, bad in refused.items():
        with pytest.raises(ConfigError) as e:
            trained_layers(bad)
        assert str(e.value).count(". ") == 0 and str(e.value).endswith("."), what
    with pytest.raises(ValueError, match="adapt must be none, lora or layers"):
        TrainSettings(adapt="full")


@pytest.mark.corpora
def test_evaluate_only_scores_the_adapted_fits_and_a_run_with_other_evaluations_resumes_them(
    data, whisper, tmp_path, caplog
) -> None:
    out, report = tmp_path / "model", tmp_path / "report"
    args = train(experiment(tmp_path, whisper, epochs=2), data, out, tmp_path / "cache")
    assert main([*args, "--evaluate-only", "--report", str(report)]) == 0
    assert not (out / "bundle.json").exists() and (report / "report.md").is_file()
    split = json.loads((report / "metrics.json").read_text())["compare23_split"]
    assert 0 <= split["adapt_epochs"][0] <= 2
    assert {"spearman_mean"} <= split["frozen"].keys() and {"spearman_mean"} <= split["probe"].keys()

    # Other [evaluation] settings, the same training ones: the fit is taken from its checkpoint
    caplog.set_level(logging.INFO, logger="emomon")
    other = experiment(tmp_path, whisper, epochs=2, probe=False)
    assert main(train(other, data, out, tmp_path / "cache", "--resume")) == 0
    assert any("compare23_split 1/1: resumed after epoch 2" in r.getMessage() for r in caplog.records)
    again = json.loads((out / "bundle.json").read_text())["metrics"]["evaluations"]["compare23_split"]
    assert "probe" not in again and again["spearman_mean"] == split["spearman_mean"]


def test_checkpoints_are_kept_for_the_same_training_settings_and_dropped_for_others(tmp_path) -> None:
    cfg = replace(Config(), train=TrainSettings(adapt="layers"))
    fit = {"w": torch.arange(4.0)}
    Checkpoints(tmp_path, cfg, resume=False).save("rest_to_emodb 1/1", fit, {"epoch": 1})
    # another run of the same training settings, other protocols, not resuming: trains its own
    # fits again (nothing loads), and leaves that one for a later run to resume
    other_protocols = replace(cfg, evaluation=EvaluationSettings(protocols=("*>ravdess",)))
    assert Checkpoints(tmp_path, other_protocols, resume=False).load("rest_to_emodb 1/1") is None
    tensors, meta = Checkpoints(tmp_path, cfg, resume=True).load("rest_to_emodb 1/1")
    assert torch.equal(tensors["w"], fit["w"]) and meta == {"epoch": 1}
    # other training settings: refused when resuming, emptied when starting over
    other_lr = replace(cfg, train=TrainSettings(adapt="layers", encoder_lr=1e-5))
    with pytest.raises(ConfigError, match="are of other settings than this run's"):
        Checkpoints(tmp_path, other_lr, resume=True)
    Checkpoints(tmp_path, other_lr, resume=False)
    assert not list(tmp_path.glob("*.safetensors"))


def test_masking_replaces_spans_and_channels_of_each_clip_by_its_mean() -> None:
    x = torch.randn(2, 120, 16)
    lengths = torch.tensor([120, 60])
    s = TrainSettings(adapt="layers", mask_time=0.3, mask_span=10, mask_channels=0.25)
    out = mask_frames(x, lengths, s, torch.Generator().manual_seed(0))
    assert torch.equal(out[1, 60:], x[1, 60:]) and not torch.equal(out, x)  # padding untouched
    for b, n in enumerate(lengths.tolist()):
        mean = x[b, :n].mean(0)
        channels = torch.isclose(out[b, :n], mean.expand(n, -1)).all(0)
        assert channels.sum() == 4  # a quarter of the 16 channels, the whole clip long
        frames = torch.isclose(out[b, :n][:, ~channels], mean[~channels].expand(n, -1)).all(1)
        assert 0 < frames.float().mean() <= 0.3 + 10 / n  # a span more or less, as rounded; overlaps
        kept = ~frames[:, None] & ~channels[None]
        assert torch.equal(out[b, :n][kept], x[b, :n][kept])
    again = mask_frames(x, lengths, s, torch.Generator().manual_seed(0))
    assert torch.equal(again, out)  # drawn from the fit's generator: a resumed run masks alike
    assert torch.equal(mask_frames(x, lengths, TrainSettings(), torch.Generator()), x)
    with pytest.raises(ValueError, match="mask_time and mask_channels must be in"):
        TrainSettings(mask_time=1.0)
