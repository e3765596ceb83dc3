"""Encoders: the real transformers loading path on tiny saved models, and eGeMAPS on Emo-DB."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from support.data import load_clip

from emomon.model.audio import SAMPLE_RATE
from emomon.model.encoder import OPENSMILE_SETS, SSLEncoder, deltas, load_encoder
from emomon.model.errors import ConfigError, EncoderLoadError
from emomon.model.smile import SmileLLD
from emomon.model.specs import EncoderSpec


def test_loads_tiny_hubert_from_a_local_folder(tiny_hubert: Path, clips) -> None:
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), device="cpu")
    assert isinstance(enc, SSLEncoder)
    assert enc.dim == 32 and enc.frame_hop_s == pytest.approx(0.02)
    assert enc.normalize_waveform  # read from the saved preprocessor_config.json
    emb = enc.encode(clips)
    assert emb.features.shape[0] == 3 and emb.features.shape[2] == 32
    for i, clip in enumerate(clips):  # one frame per 20 ms of audio
        assert int(emb.lengths[i]) == enc.frames(len(clip))
        assert abs(int(emb.lengths[i]) - len(clip) / 320) <= 2
        assert emb.features[i, int(emb.lengths[i]) :].abs().sum() == 0  # zero padding
    for n in (400, 4800, 4801, 12345, 32000):  # frame count formula == what the model outputs
        with torch.inference_mode():
            assert enc.frames(n) == enc.model(torch.zeros(1, n)).last_hidden_state.shape[1]


@pytest.mark.parametrize("fixture", ["tiny_hubert", "tiny_hubert_group", "tiny_wav2vec2"])
def test_segment_alone_equals_segment_in_a_batch(fixture: str, request, clips) -> None:
    folder = request.getfixturevalue(fixture)
    enc = load_encoder(EncoderSpec.paper(name=str(folder)), device="cpu")
    together = enc.encode(clips)
    for i, clip in enumerate(clips):
        alone = enc.encode([clip]).features[0]
        assert alone.shape == together.segment(i).shape
        assert torch.allclose(alone, together.segment(i), atol=1e-4, rtol=1e-4)


def test_group_norm_encoder_is_not_batched_across_lengths(tiny_hubert_group: Path, clips) -> None:
    """Why group-norm encoders batch only equal lengths: padding would change their output."""
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert_group)), device="cpu")
    assert not enc.pads_exactly
    assert enc.batches([100, 200, 100]) == [[0, 2], [1]]
    assert enc.batches([300, 100, 200, 100, 300]) == [[1, 3], [2], [0, 4]]
    short, long = clips[2], clips[0]
    padded = torch.zeros(1, len(long))
    padded[0, : len(short)] = torch.from_numpy(short)
    mask = (torch.arange(len(long)) < len(short)).long()[None]
    with torch.inference_mode():
        leaky = enc.forward(padded, mask)[0, : enc.frames(len(short))]
        alone = enc.forward(torch.from_numpy(short)[None], None)[0]
    assert (leaky - alone).abs().max() > 1e-3


def test_batches_go_by_length_and_respect_the_memory_cap(tiny_hubert: Path) -> None:
    enc = SSLEncoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu", max_batch_s=1.0)  # 16000 samples
    assert enc.batches([8000, 4000, 6000, 16000]) == [[1, 2], [0], [3]]  # 2 x 6000, then 8000 alone
    assert sorted(i for b in enc.batches(list(range(5000, 9000, 500))) for i in b) == list(range(8))


def test_layer_choice(tiny_hubert: Path, clips) -> None:
    last = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu").encode(clips[:2])
    top = load_encoder(EncoderSpec.paper(name=str(tiny_hubert), layer=2), "cpu").encode(clips[:2])
    first = load_encoder(EncoderSpec.paper(name=str(tiny_hubert), layer=0), "cpu").encode(clips[:2])
    mixed_enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert), layer="weighted"), "cpu")
    mixed = mixed_enc.encode(clips[:2])
    # "last" is last_hidden_state: layer 2's output, after the final LayerNorm that
    # stable-layer-norm (Large-style) models apply; transformers' versions differ on
    # whether hidden_states[-1] is taken before or after it.
    final_norm = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu").model.encoder.layer_norm
    with torch.no_grad():
        normed = final_norm(top.features) * (top.features.abs().sum(-1, keepdim=True) > 0)
    assert torch.allclose(normed, last.features, atol=1e-5) or torch.allclose(top.features, last.features)
    assert not torch.allclose(first.features, top.features)
    assert mixed_enc.num_layers == 3 and mixed.features.shape[1] == 3  # (B, K, T, D)
    assert torch.allclose(mixed.features[:, 2], top.features, atol=1e-5)
    assert torch.allclose(mixed.features[:, 0], first.features, atol=1e-5)


def test_layer_out_of_range_is_one_clear_sentence(tiny_hubert: Path) -> None:
    with pytest.raises(ConfigError, match="encoder.layer = 7 is out of range"):
        load_encoder(EncoderSpec.paper(name=str(tiny_hubert), layer=7), "cpu")


def test_bfloat16_embeddings_stay_close(tiny_hubert: Path, clips) -> None:
    fp32 = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu").encode(clips[:1]).features
    bf16 = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu", "bfloat16").encode(clips[:1]).features
    assert bf16.dtype == torch.float32  # handed on as float32 whatever the compute dtype
    cos = torch.nn.functional.cosine_similarity(fp32.flatten(), bf16.flatten(), dim=0)
    assert 0.99 < cos < 1.0


def test_not_a_speech_model_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(EncoderLoadError, match="is a 'bert' model"):
        load_encoder(EncoderSpec.paper(name=str(tmp_path)), "cpu")


def test_broken_local_folder_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(EncoderLoadError, match=f"Encoder folder '{tmp_path}'"):
        load_encoder(EncoderSpec.paper(name=str(tmp_path)), "cpu")


def test_a_pickled_checkpoint_is_refused_not_unpickled(tiny_hubert: Path, tmp_path: Path) -> None:
    """A folder whose weights are only pytorch_model.bin (a pickle: loading it can run code)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_hubert, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(EncoderLoadError, match=f"Encoder folder '{folder}' cannot be loaded") as e:
        load_encoder(EncoderSpec.paper(name=str(folder)), "cpu")
    assert "\n" not in str(e.value)


@pytest.mark.system
def test_offline_without_weights_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    code = (
        "from emomon.model.encoder import load_encoder\nfrom emomon.model.specs import EncoderSpec\n"
        "from emomon.model.errors import EmomonError\n"
        "try:\n    load_encoder(EncoderSpec.paper(), 'cpu')\n"
        "except EmomonError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "facebook/hubert-large-ll60k" in lines[0] and "local folder" in lines[0]
    assert "Traceback" not in out.stderr


def test_egemaps_on_real_emodb_speech(clips) -> None:
    enc = load_encoder(EncoderSpec(kind="egemaps", name="eGeMAPSv02"))
    emb = enc.encode(clips)
    assert emb.features.shape[-1] == OPENSMILE_SETS["egemaps"][1] == enc.dim == 25
    for i, clip in enumerate(clips):  # one frame per 10 ms
        assert abs(int(emb.lengths[i]) - len(clip) / 160) <= 6
    assert torch.isfinite(emb.features).all()
    # Loudness (first descriptor) of the angry take is well above the sad one's.
    loud = [float(emb.segment(i)[:, 0].mean()) for i in range(2)]
    assert loud[0] > loud[1]


def test_egemaps_separates_loud_anger_from_quiet_boredom_across_speakers(emodb_rows) -> None:
    enc = load_encoder(EncoderSpec(kind="egemaps", name="eGeMAPSv02"))
    pick = {e: [r["file"].split("/")[-1] for r in emodb_rows if r["emotion"] == e][:6] for e in ("anger", "boredom")}
    loud = {
        e: np.mean([float(enc.encode([load_clip(f)]).segment(0)[:, 0].mean()) for f in fs]) for e, fs in pick.items()
    }
    assert loud["anger"] > loud["boredom"]


def test_compare_descriptors_with_deltas_on_real_speech(clips) -> None:
    enc = load_encoder(EncoderSpec(kind="compare", name="ComParE_2016"))
    emb = enc.encode(clips)
    assert enc.dim == 130 and emb.features.shape[-1] == 130
    for i, clip in enumerate(clips):  # one frame per 10 ms
        assert abs(int(emb.lengths[i]) - len(clip) / 160) <= 6
    # A segment's features do not depend on what it was batched with.
    alone = enc.encode([clips[1]]).segment(0)
    assert torch.equal(alone, emb.segment(1))
    # The second half is the regression delta of the first.
    seg = emb.segment(0).numpy()
    assert np.allclose(seg[:, 65:], deltas(seg[:, :65]), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(OPENSMILE_SETS))
def test_descriptors_are_opensmiles_own_bit_for_bit(kind: str, clips) -> None:
    """SmileLLD leaves the functionals out and resets one instance between signals; the frames
    are still exactly those of opensmile.Smile.process_signal, for every signal after the first."""
    import opensmile

    name = OPENSMILE_SETS[kind][0]
    reference = opensmile.Smile(
        feature_set=opensmile.FeatureSet[name], feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    lld = SmileLLD(name, SAMPLE_RATE)
    assert lld.dim == OPENSMILE_SETS[kind][1]
    for clip in clips + clips[::-1]:
        expected = reference.process_signal(clip, SAMPLE_RATE).to_numpy(np.float32)
        assert np.array_equal(lld(clip), expected)


def test_threads_give_the_same_descriptors_in_order(emodb_rows) -> None:
    from emomon.model.encoder import OpenSmileEncoder

    spec = EncoderSpec(kind="compare", name="ComParE_2016")
    segments = [load_clip(r["file"].split("/")[-1]) for r in emodb_rows[:24]]
    segments = [s[: len(s) - 800 * (i % 5)] for i, s in enumerate(segments)]  # lengths differ
    one, three = OpenSmileEncoder(spec, threads=1), OpenSmileEncoder(spec, threads=3)
    assert three.threads == 3
    a, b = one.encode(segments), three.encode(segments)
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.features, b.features)
    assert torch.equal(three.encode(segments[:2]).features, one.encode(segments[:2]).features)


def test_descriptors_of_short_and_full_scale_signals(clips) -> None:
    lld = SmileLLD("ComParE_2016", SAMPLE_RATE)
    short = lld(np.zeros(80, dtype=np.float32))  # shorter than one analysis window
    assert short.shape == (1, 65) and np.isnan(short).all()
    # Full scale (1.0) is clipped to the largest 16-bit sample, not wrapped round to -32768.
    peaks = np.abs(clips[0]).astype(np.float32)
    peaks[::40] = 1.0
    assert np.array_equal(lld(peaks), lld(np.minimum(peaks, np.float32(32767 / 32768))))
    assert np.isfinite(lld(clips[1])).all()  # and the instance works on after both


def test_deltas_of_a_ramp_are_its_slope() -> None:
    ramp = np.arange(20, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], dtype=np.float32)
    d = deltas(ramp)
    assert np.allclose(d[2:-2], [[1.0, -2.0]])  # exact inside; the repeated edges flatten it
    assert abs(d[0, 0]) < 1.0


def test_egemaps_spec_has_one_layer() -> None:
    with pytest.raises(ValueError):
        EncoderSpec(kind="egemaps", layer=4)
    assert replace(EncoderSpec(), layer=4).encoder_id.endswith("layer=4")


@pytest.mark.system
def test_scoring_processes_get_the_memory_bounds_and_a_users_values_win() -> None:
    from emomon.model.memory import scorer_env, spawning_scorers, tcmalloc

    assert tcmalloc(), "libtcmalloc-minimal4 is missing (make system-deps installs it)"
    quiet = str(1 << 40)
    assert scorer_env({}) == {
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64",
        "LD_PRELOAD": tcmalloc(),
        "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": quiet,
    }
    assert scorer_env({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8", "LD_PRELOAD": "libmine.so"}) == {"MALLOC_ARENA_MAX": "2"}
    assert scorer_env({}, preload=False) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "MALLOC_ARENA_MAX": "2"}
    before = dict(os.environ)
    maps, cache = "open('/proc/self/maps').read()", "os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY']"
    probe = f"import os; print('tcmalloc' in {maps}, {cache})"
    with spawning_scorers():
        child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert child.stdout.split() == ["True", "64"]
    assert dict(os.environ) == before
