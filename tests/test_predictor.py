"""Predictor on real Emo-DB speech: batching, attention, timings, input checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support.data import EMOTIONS9
from support.models import make_bundle

from emomon.model.audio import SAMPLE_RATE
from emomon.model.bundle import save_bundle
from emomon.model.encoder import load_encoder
from emomon.model.predictor import Predictor
from emomon.model.specs import EncoderSpec


@pytest.mark.parametrize("fixture", ["tiny_hubert", "tiny_hubert_group"])
@pytest.mark.parametrize("layer", ["last", "weighted"])
def test_batch_equals_one_by_one(fixture: str, layer: str, request, clips) -> None:
    enc = load_encoder(EncoderSpec.paper(name=str(request.getfixturevalue(fixture)), layer=layer), "cpu")
    pred = Predictor(make_bundle(enc), enc, "cpu")
    together = pred.predict(clips)
    assert [p.batch_size for p in together] == [3, 3, 3]
    for clip, p in zip(clips, together):
        (alone,) = pred.predict([clip])
        assert alone.batch_size == 1
        assert max(abs(alone.shares[e] - p.shares[e]) for e in EMOTIONS9) <= 1e-4
        np.testing.assert_allclose(alone.attention, p.attention, atol=1e-4)


def test_loading_a_model_leaves_the_host_process_alone(tiny_hubert: Path, tmp_path: Path, monkeypatch) -> None:
    """A library call changes no process-wide setting (environment, malloc); the emomon
    command bounds its own process instead."""
    for key in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    save_bundle(make_bundle(enc), tmp_path / "b")
    Predictor.from_bundle(tmp_path / "b", device="cpu").predict([np.zeros(SAMPLE_RATE, np.float32)])
    assert dict(os.environ) == before
    from emomon.cli import main

    (tmp_path / "empty.toml").write_text("")
    assert main(["--config", str(tmp_path / "empty.toml"), "batch", str(tmp_path / "a.wav")]) == 2  # no --out
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"  # the command's own process is bounded


def test_prediction_fields(tiny_hubert: Path, clips) -> None:
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    out = Predictor(make_bundle(enc), enc, "cpu").predict(clips)
    for clip, p in zip(clips, out):
        assert tuple(p.shares) == EMOTIONS9
        assert all(v >= 0 for v in p.shares.values())  # Architecture 2 ends in a ReLU
        assert p.top_emotion == max(p.shares, key=p.shares.get)
        assert p.duration_s == pytest.approx(len(clip) / SAMPLE_RATE)
        assert p.attention.shape == (9, enc.frames(len(clip)) // 2)
        np.testing.assert_allclose(p.attention.sum(1), 1.0, atol=1e-5)
        assert p.attention_hop_s == pytest.approx(0.04)
        assert p.encoder_ms > 0 and p.regressor_ms > 0


def test_egemaps_predictor_from_a_saved_bundle(tmp_path: Path, clips) -> None:
    enc = load_encoder(EncoderSpec(kind="egemaps", name="eGeMAPSv02"))
    emotions = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
    save_bundle(make_bundle(enc, emotions, arch=1), tmp_path / "b")
    pred = Predictor.from_bundle(tmp_path / "b", device="cpu")
    out = pred.predict(clips)
    assert [tuple(p.shares) for p in out] == [emotions] * 3
    assert out[0].attention is None  # Architecture 1 has no attention
    values = np.array([list(p.shares.values()) for p in out])
    assert np.isfinite(values).all() and values.std(0).max() > 0  # different speech, different output


@pytest.mark.parametrize(
    "segment,message",
    [
        (np.zeros(SAMPLE_RATE // 10, np.float32), "lasts 0.100 s; the model needs at least 0.3 s"),
        (np.zeros((2, SAMPLE_RATE), np.float32), "must be a 1-D float array"),
        (np.zeros(SAMPLE_RATE, np.int16), "must be a 1-D float array"),
        (np.full(SAMPLE_RATE, np.nan, np.float32), "contains NaN"),
    ],
)
def test_bad_segments_are_named(tiny_hubert: Path, clips, segment, message: str) -> None:
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    with pytest.raises(ValueError, match=f"Segment 1 {message}"):
        Predictor(make_bundle(enc), enc, "cpu").predict([clips[0], segment])


def test_empty_input_gives_empty_output(tiny_hubert: Path) -> None:
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    assert Predictor(make_bundle(enc), enc, "cpu").predict([]) == []


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_hubert: Path, clips) -> None:
    enc_cpu = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    enc_gpu = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cuda")
    bundle = make_bundle(enc_cpu)
    cpu = Predictor(bundle, enc_cpu, "cpu").predict(clips)
    gpu = Predictor(make_bundle(enc_cpu), enc_gpu, "cuda").predict(clips)
    for a, b in zip(cpu, gpu):
        assert max(abs(a.shares[e] - b.shares[e]) for e in EMOTIONS9) <= 1e-3


@pytest.mark.parametrize("dtype", ["auto", "bfloat16", "int8"])
def test_every_compute_dtype_keeps_the_shares_within_001_of_float32(tiny_hubert: Path, clips, dtype: str) -> None:
    """The same bundle through a float32 encoder and one in `dtype`, on real Emo-DB clips."""
    ref_enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu", "float32")
    bundle = make_bundle(ref_enc, output="softmax")
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu", dtype)
    reference = Predictor(bundle, ref_enc, "cpu").predict(clips)
    other = Predictor(bundle, enc, "cpu").predict(clips)
    assert enc.compute == dtype or (dtype == "auto" and enc.compute in ("int8", "bfloat16"))
    for a, b in zip(reference, other):
        assert max(abs(a.shares[e] - b.shares[e]) for e in EMOTIONS9) <= 0.01


def test_auto_dtype_follows_the_cpu(tiny_hubert: Path) -> None:
    """bfloat16 only with native bf16 instructions (AMX or AVX512-BF16), int8 on other CPUs."""
    from emomon.model.compute import choose_dtype, cpu_flags

    native = bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    chosen, why = choose_dtype("auto", "cpu")
    assert chosen == ("bfloat16" if native else "int8") and why.startswith("auto: ")
    assert choose_dtype("float16", "cpu") == ("float16", "as configured")
    enc = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu", "auto")
    assert Predictor(make_bundle(enc), enc, "cpu").describe()["dtype"] == chosen
