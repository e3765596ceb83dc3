"""LoRA adapters (model/adapter.py) on a tiny Whisper encoder built here: an untrained
adapter changes nothing, a trained one equals its merged weights, only the adapter trains,
and an adapter for another encoder is refused in one sentence."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from emomon.model.adapter import (
    LayersSpec,
    LoraSpec,
    adapter_state,
    add_lora,
    layers_state,
    merge,
    replace_layers,
    unwrap,
)
from emomon.model.errors import BundleError


def tiny_encoder(d_model: int = 32, seed: int = 0):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    cfg = WhisperConfig(num_mel_bins=16, d_model=d_model, encoder_layers=3, encoder_attention_heads=2,
                        encoder_ffn_dim=64, max_source_positions=64)  # fmt: skip
    return WhisperEncoder(cfg).eval()


def run(encoder, mel: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder(mel).last_hidden_state  # (B, T, D)


@pytest.fixture()
def mel() -> torch.Tensor:
    return torch.randn(2, 16, 128, generator=torch.Generator().manual_seed(1))  # (B, mels, frames)


def trained(encoder, spec: LoraSpec, seed: int = 2) -> dict:
    """Adapters with random B, as if trained."""
    adapters = add_lora(encoder, spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in adapters.values():
            m.lora_b.copy_(torch.randn(m.lora_b.shape, generator=g) * 0.05)
    return adapters


def test_an_untrained_adapter_changes_nothing(mel) -> None:
    base = tiny_encoder()
    adapted = copy.deepcopy(base)
    adapters = add_lora(adapted, LoraSpec(rank=4, layers=(0, 1)))
    assert len(adapters) == 12  # six linear layers in each of two layers
    assert torch.equal(run(adapted, mel), run(base, mel))


def test_only_the_adapter_trains(mel) -> None:
    encoder = tiny_encoder()
    spec = LoraSpec(rank=4, layers=(1, 2))
    adapters = add_lora(encoder, spec)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{m}" for n in adapters for m in "ab"}  # the convolutions and norms too stay
    before = {n: p.detach().clone() for n, p in encoder.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        encoder(mel).last_hidden_state.pow(2).mean().backward()
        opt.step()
    assert all(torch.equal(p, before[n]) for n, p in encoder.named_parameters() if not p.requires_grad)
    assert any(m.lora_b.abs().sum() > 0 for m in adapters.values())  # B left zero: it did train


def test_a_trained_adapter_equals_its_merged_weights(mel, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    base = tiny_encoder()
    spec = LoraSpec(rank=8, alpha=16.0)
    adapted = copy.deepcopy(base)
    adapters = trained(adapted, spec)
    with_adapter = run(adapted, mel)
    assert (with_adapter - run(base, mel)).abs().max() > 1e-3  # the adapter does something
    save_file(adapter_state(adapters), tmp_path / "adapter.safetensors")
    merged = copy.deepcopy(base)  # the bundle's way: plain weights, the saved adapter folded in
    merge(merged, spec, load_file(tmp_path / "adapter.safetensors"))
    assert torch.allclose(run(merged, mel), with_adapter, atol=1e-5)
    unwrap(adapted, spec)  # the trainer's way: fold in place, plain nn.Linear again
    assert not any("lora" in n for n, _ in adapted.named_parameters())
    assert torch.allclose(run(adapted, mel), with_adapter, atol=1e-5)


def test_an_adapter_for_another_encoder_is_refused() -> None:
    spec = LoraSpec(rank=4, layers=(0,))
    state = adapter_state(trained(tiny_encoder(d_model=32), spec))
    wider = tiny_encoder(d_model=48)
    with pytest.raises(BundleError, match="trained on another encoder") as e:
        merge(wider, spec, state)
    assert "\n" not in str(e.value)
    with pytest.raises(BundleError, match=r"does not fit its settings: 2 matrices missing"):
        merge(tiny_encoder(), spec, {k: v for k, v in state.items() if "fc2" not in k})
    with pytest.raises(BundleError, match="names encoder layer 5; this encoder has layers 0 to 2"):
        merge(tiny_encoder(), LoraSpec(rank=4, layers=(5,)), state)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraSpec(rank=0)


def test_fine_tuned_layers_saved_as_float16_changes_run_as_their_float32_weights(mel) -> None:
    base = tiny_encoder()
    tuned = copy.deepcopy(base)
    spec = LayersSpec(layers=(0, 2))
    before = layers_state(tuned, spec)  # the trainer's way: a snapshot of the same module, then it trains
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # as if trained: every tensor of the two layers moved by about 1 %
        for name, t in tuned.layers.named_parameters():
            if int(name.split(".")[0]) in spec.layers:
                t += torch.randn(t.shape, generator=g) * 0.01 * t.abs().mean()
    full, change = layers_state(tuned, spec), layers_state(tuned, spec, before)
    assert all(t.dtype == torch.float16 for t in change.values()) and change.keys() == full.keys()
    from_full, from_change = copy.deepcopy(base), copy.deepcopy(base)
    replace_layers(from_full, spec, full)
    replace_layers(from_change, LayersSpec(layers=(0, 2), delta=True), change)
    reference, moved = run(tuned, mel), (run(tuned, mel) - run(base, mel)).abs().max()
    assert torch.equal(run(from_full, mel), reference)
    assert (run(from_change, mel) - reference).abs().max() < 1e-3 * moved  # the rounding: a thousandth of the change


# -- a bundle that carries an adapter ------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    """A tiny Whisper bundle, and the same bundle with a (randomly 'trained') adapter on layers 1-2."""
    from support.models import make_bundle, save_tiny_whisper

    from emomon.model.adapter import Adapter
    from emomon.model.bundle import save_bundle
    from emomon.model.encoder import load_encoder
    from emomon.model.specs import EncoderSpec
    from emomon.model.whisper import load_whisper

    root = tmp_path_factory.mktemp("adapted")
    spec = EncoderSpec(kind="whisper", name=str(save_tiny_whisper(root / "whisper")), layer=2)
    encoder = load_encoder(spec, "cpu", "float32")
    bundle = make_bundle(encoder, arch=3, output="softmax", head="shared")
    bundle.encoder_digest = encoder.digest
    plain = save_bundle(bundle, root / "plain")
    lora = LoraSpec(rank=4, layers=(0, 1))
    base, _, _ = load_whisper(spec)
    bundle.adapter = Adapter(lora, adapter_state(trained(base, lora)))
    return {"plain": plain, "adapted": save_bundle(bundle, root / "adapted"), "spec": spec, "lora": lora}


def voice(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 150 * t) + rng.normal(0, 0.02, len(t))).astype(np.float32)


def test_a_bundle_carries_its_adapter_and_the_predictor_runs_the_merged_weights(bundles) -> None:
    from emomon.model.bundle import load_bundle
    from emomon.model.encoder import load_encoder
    from emomon.model.predictor import Predictor

    bundle = load_bundle(bundles["adapted"])
    assert bundle.adapter.spec == bundles["lora"] and len(bundle.adapter.state) == 24
    adapted = Predictor.from_bundle(bundles["adapted"], "cpu", "float32")
    plain = Predictor.from_bundle(bundles["plain"], "cpu", "float32")
    assert adapted.describe()["adapter"] == "LoRA r4 on layers 1, 2" and plain.describe()["adapter"] == ""
    by_hand = load_encoder(bundles["spec"], "cpu", "float32")  # the base weights, the adapter folded in here
    merge(by_hand.model, bundle.adapter.spec, bundle.adapter.state)
    reference = Predictor(bundle, by_hand, "cpu")
    x = voice()
    [a], [p], [r] = adapted.predict([x]), plain.predict([x]), reference.predict([x])
    assert a.shares == pytest.approx(r.shares, abs=1e-6)
    assert max(abs(a.shares[e] - p.shares[e]) for e in a.shares) > 1e-4  # the adapter moves the shares
    assert adapted.encoder.digest == plain.encoder.digest == bundle.encoder_digest  # the base's digest


def test_a_damaged_or_mismatched_adapter_is_refused(bundles, tmp_path: Path) -> None:
    import json
    import shutil

    from emomon.model.bundle import load_bundle
    from emomon.model.predictor import Predictor

    damaged = shutil.copytree(bundles["adapted"], tmp_path / "damaged")
    data = bytearray((damaged / "adapter.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "adapter.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="Adapter file .* is corrupt: its SHA-256 differs"):
        load_bundle(damaged)
    other = shutil.copytree(bundles["adapted"], tmp_path / "other")
    manifest = json.loads((other / "bundle.json").read_text())
    manifest["adapter"]["rank"] = 8  # settings that do not fit the matrices (another encoder's adapter)
    (other / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="it was trained on another encoder") as e:
        Predictor.from_bundle(other, "cpu", "float32")
    assert "\n" not in str(e.value)


def test_the_onnx_export_folds_the_adapter_in(bundles, tmp_path: Path) -> None:
    from emomon.model.export import export_bundle
    from emomon.model.onnx_engine import OnnxPredictor
    from emomon.model.predictor import Predictor

    export_bundle(bundles["adapted"], tmp_path / "a.onnx")
    x = voice(2.3, seed=1)
    [o] = OnnxPredictor(tmp_path / "a.onnx").predict([x])
    [t] = Predictor.from_bundle(bundles["adapted"], "cpu", "float32").predict([x])
    assert max(abs(o.shares[e] - t.shares[e]) for e in t.shares) <= 1e-4
