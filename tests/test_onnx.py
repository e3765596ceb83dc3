"""ONNX export and the ONNX Runtime engine: tiny Whisper bundles built here (fast tier),
the shipped default on real Emo-DB speech (weights + corpora), and the command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.models import make_bundle, save_tiny_whisper

from emomon.model.audio import SAMPLE_RATE
from emomon.model.errors import ConfigError, EmomonError


def sounds(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Voice-like test signals of different lengths: harmonics of a wandering pitch in noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        dur = [0.3, 1.3, 2.0, 3.7, 0.61, 7.3][i % 6]
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = 120 + 60 * np.sin(2 * np.pi * (0.5 + i) * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.05 + 0.1 * i)
        out.append((x + rng.normal(0, 0.01, len(t))).astype(np.float32))
    return out


def tiny_bundle(folder: Path, whisper: Path, norm: str, **regressor) -> Path:
    from emomon.model.bundle import save_bundle
    from emomon.model.encoder import load_encoder
    from emomon.model.specs import EncoderSpec

    enc = load_encoder(EncoderSpec(kind="whisper", name=str(whisper), layer=1), "cpu", "float32")
    bundle = make_bundle(enc, **regressor)
    bundle.norm_mode, bundle.norm_prior_frames = norm, 40
    bundle.provenance = {"licence": "test licence"}
    bundle.temperature = 1.3 if regressor.get("output") == "softmax" else 1.0
    return save_bundle(bundle, folder)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """A speaker-adaptive pooled bundle with softmax shares, and a global one with attentive pooling."""
    root = tmp_path_factory.mktemp("onnx")
    whisper = save_tiny_whisper(root / "whisper")
    return {
        "adaptive": tiny_bundle(root / "adaptive", whisper, "speaker", arch=3, output="softmax", head="shared",
                                ensemble=2, pooling=("mean", "std", "p10", "p90")),
        "attention": tiny_bundle(root / "attention", whisper, "global", arch=3, pooling=("amean", "astd", "p50")),
    }  # fmt: skip


@pytest.fixture(scope="module")
def exported(bundles, tmp_path_factory) -> dict[str, Path]:
    from emomon.model.export import export_bundle

    out = tmp_path_factory.mktemp("exports")
    return {k: export_bundle(b, out / f"{k}.onnx").path for k, b in bundles.items()}


def shares(predictions) -> np.ndarray:
    return np.array([list(p.shares.values()) for p in predictions])


def test_float32_export_equals_the_predictor_through_adaptive_sessions(bundles, exported):
    """Two interleaved sessions, interim results that must not move a session, segments from
    0.3 s to 7.3 s: the graph keeps each session's statistics as the Predictor does."""
    from emomon.model.onnx_engine import OnnxPredictor
    from emomon.model.predictor import Predictor

    torch_p = Predictor.from_bundle(bundles["adaptive"], "cpu", "float32")
    onnx_p = OnnxPredictor(exported["adaptive"], "cpu")
    assert onnx_p.adapts and torch_p.adapts
    assert onnx_p.emotions == torch_p.emotions
    segs = sounds(12)
    got, want = [], []
    for i, s in enumerate(segs):
        for p, out in ((torch_p, want), (onnx_p, got)):
            p.use_session("a" if i % 3 else "b")
            out += p.predict([s], update_session=i % 4 != 3)  # every fourth one interim
    assert np.abs(shares(got) - shares(want)).max() < 1e-4
    assert np.allclose(shares(got).sum(1), 1.0, atol=1e-5)
    # the statistics moved: the same segment scores differently late in a session than fresh
    onnx_p.reset_session()
    fresh = shares(onnx_p.predict([segs[5]], update_session=False))
    assert np.abs(fresh - shares(got[5:6])).max() > 1e-3


def test_global_bundle_returns_attention_that_matches(bundles, exported):
    from emomon.model.onnx_engine import OnnxPredictor
    from emomon.model.predictor import Predictor

    torch_p = Predictor.from_bundle(bundles["attention"], "cpu", "float32")
    onnx_p = OnnxPredictor(exported["attention"], "cpu")
    assert not onnx_p.adapts
    for s in sounds(6, seed=1):
        [a], [b] = torch_p.predict([s]), onnx_p.predict([s])
        assert np.abs(np.array(list(a.shares.values())) - np.array(list(b.shares.values()))).max() < 1e-4
        assert b.attention.shape == a.attention.shape
        assert np.abs(b.attention - a.attention).max() < 1e-4
        assert b.attention_hop_s == a.attention_hop_s


def test_metadata_names_emotions_version_and_licence(bundles, exported):
    import onnx

    from emomon import __version__
    from emomon.model.bundle import load_bundle
    from emomon.model.export import bundle_digest

    meta = {p.key: p.value for p in onnx.load(str(exported["adaptive"])).metadata_props}
    assert json.loads(meta["emotions"]) == list(load_bundle(bundles["adaptive"]).emotions)
    assert meta["emomon_version"] == __version__
    assert meta["licence"] == "test licence"
    assert meta["bundle_digest"] == bundle_digest(bundles["adaptive"])
    assert meta["normalization"] == "speaker" and meta["precision"] == "float32"


def test_int8_export_quantises_the_encoder_only(bundles, tmp_path):
    """Without a calibration: dynamic int8 (scales per call), so the engine runs it a segment
    at a time."""
    import onnx

    from emomon.model.export import export_bundle
    from emomon.model.onnx_engine import OnnxPredictor
    from emomon.model.predictor import Predictor

    info = export_bundle(bundles["attention"], tmp_path / "q.onnx", "int8")
    ops = {n.op_type for n in onnx.load(str(info.path)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    onnx_p, torch_p = OnnxPredictor(info.path, "cpu"), Predictor.from_bundle(bundles["attention"], "cpu", "float32")
    assert onnx_p.describe()["dtype"] == "int8" and not onnx_p.batches
    s = sounds(3)[2]
    diff = np.abs(shares(onnx_p.predict([s])) - shares(torch_p.predict([s])))
    assert 0 < diff.max() < 0.05  # quantised: close, not equal
    assert [p.batch_size for p in onnx_p.predict(sounds(3))] == [1, 1, 1]


def alone_and_batched(path: Path, segs: list[np.ndarray], keys: list[str]) -> tuple[list, list]:
    """The segments scored one call each in their sessions, and all in one predict()."""
    from emomon.model.onnx_engine import OnnxPredictor

    one, batched = OnnxPredictor(path, "cpu"), OnnxPredictor(path, "cpu")
    alone = []
    for s, k in zip(segs, keys):
        one.use_session(k)
        alone += one.predict([s])
    return alone, batched.predict(segs, sessions=keys)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_segment_scores_the_same_alone_and_in_any_batch(bundles, tmp_path, precision):
    """Segments of three sessions (one of them twice, so its order matters) and of 0.3 to
    7.3 s in one predict(): the graph runs them padded, in calls of several; each result is
    the one it gets alone, in float32 and in int8 calibrated on speech-like sound (smoothed,
    the attention projections and feed-forward blocks static)."""
    import shutil

    from emomon.model.export import export_bundle
    from emomon.model.predictor import Predictor
    from emomon.model.quantise import RANGES, Calibration, calibrate

    bundle = shutil.copytree(bundles["adaptive"], tmp_path / "b")
    calibrating = Predictor.from_bundle(bundle, "cpu", "float32")
    before = shares(calibrating.predict(sounds(3), update_session=False))
    calibration = calibrate(calibrating, sounds(6, seed=7), "test sounds")
    after = shares(calibrating.predict(sounds(3), update_session=False))
    assert np.abs(after - before).max() < 1e-5  # smoothing is exact in float
    assert set(calibration.inputs) == {f"encoder.layers.0.{p}" for p in ("self_attn.q_proj", "self_attn.k_proj",
                                       "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")}  # fmt: skip
    assert all(lo < hi for lo, hi in calibration.inputs.values())
    assert sorted(calibration.smooth) == ["encoder.layers.0.final_layer_norm", "encoder.layers.0.self_attn_layer_norm"]
    calibration.write(bundle)
    assert Calibration.read(bundle) == calibration and (bundle / RANGES).exists()
    info = export_bundle(bundle, tmp_path / f"{precision}.onnx", precision)
    segs = sounds(12)
    keys = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "c", "b"]
    alone, batched = alone_and_batched(info.path, segs, keys)
    assert max(p.batch_size for p in batched) > 2  # they did share calls
    assert np.abs(shares(alone) - shares(batched)).max() < 1e-5
    assert [p.top_emotion for p in alone] == [p.top_emotion for p in batched]
    if precision == "int8":
        import onnx

        model = onnx.load(str(info.path))
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
        assert {p.key: p.value for p in model.metadata_props}["quantisation"] == "static"
        want = Predictor.from_bundle(bundle, "cpu", "float32")
        ref = []
        for s, k in zip(segs, keys):
            want.use_session(k)
            ref += want.predict([s])
        assert 0 < np.abs(shares(batched) - shares(ref)).max() < 0.05  # quantised: close, not equal


def test_torch_batches_across_sessions_as_it_scores_alone(bundles):
    from emomon.model.predictor import Predictor

    segs, keys = sounds(6), ["a", "b", "a", "c", "b", "a"]
    one, batched = Predictor.from_bundle(bundles["adaptive"], "cpu", "float32"), Predictor.from_bundle(
        bundles["adaptive"], "cpu", "float32")  # fmt: skip
    alone = []
    for s, k in zip(segs, keys):
        one.use_session(k)
        alone += one.predict([s])
    together = batched.predict(segs, sessions=keys)
    assert np.abs(shares(alone) - shares(together)).max() < 1e-5
    with pytest.raises(ValueError, match="6 segments came with 2 session keys"):
        batched.predict(segs, sessions=["a", "b"])


def test_cache_exports_once_and_refuses_a_changed_file(bundles, tmp_path, monkeypatch):
    from emomon.model.export import ExportError
    from emomon.model.onnx_engine import OnnxPredictor

    monkeypatch.setenv("EMOMON_ONNX_CACHE", str(tmp_path))
    first = OnnxPredictor.from_bundle(bundles["attention"], "cpu", "float32")
    [path] = list(tmp_path.glob("*.onnx"))
    stamp = path.stat().st_mtime_ns
    OnnxPredictor.from_bundle(bundles["attention"], "cpu", "float32")
    assert path.stat().st_mtime_ns == stamp  # taken from the cache, not exported again
    assert first.name == "attention"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="fails its digest") as e:
        OnnxPredictor.from_bundle(bundles["attention"], "cpu", "float32")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_inputs_are_one_sentence(bundles, exported, tmp_path):
    from emomon.model.bundle import load_bundle, save_bundle
    from emomon.model.export import ExportError, export_bundle
    from emomon.model.onnx_engine import OnnxPredictor

    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="cannot be loaded by ONNX Runtime"):
        OnnxPredictor(not_onnx)
    with pytest.raises(ExportError, match="does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="not one of float32, int8"):
        export_bundle(bundles["attention"], tmp_path / "y.onnx", "float16")
    smile = load_bundle(bundles["attention"])
    smile.encoder = replace(smile.encoder, kind="egemaps", name="eGeMAPSv02", layer="last")
    save_bundle(smile, tmp_path / "smile")
    with pytest.raises(ExportError, match="'egemaps' encoder"):
        export_bundle(tmp_path / "smile", tmp_path / "z.onnx")
    lstm = tiny_bundle(tmp_path / "lstm", bundles["attention"].parent / "whisper", "global", arch=2)
    with pytest.raises(ExportError, match="Architecture-2 regressors"):
        export_bundle(lstm, tmp_path / "w.onnx")
    p = OnnxPredictor(exported["attention"])
    with pytest.raises(ValueError, match="Segment 0 lasts"):
        p.predict([np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match="Segment 1 lasts 31.0 s"):
        p.predict([np.zeros(8000, np.float32), np.zeros(31 * SAMPLE_RATE, np.float32)])


def test_engine_setting(bundles, tmp_path, monkeypatch):
    """torch, onnx and auto: with the export cached, auto times both once, keeps the faster,
    and reads that next time."""
    from emomon.model.engines import choose_engine, open_predictor
    from emomon.model.onnx_engine import OnnxPredictor, cached_export
    from emomon.model.predictor import Predictor

    monkeypatch.setenv("EMOMON_ONNX_CACHE", str(tmp_path))
    b = bundles["attention"]
    assert isinstance(open_predictor(b, "cpu", "float32", "torch"), Predictor)
    assert isinstance(open_predictor(b, "cpu", "float32", "onnx"), OnnxPredictor)
    with pytest.raises(ConfigError, match="engine = 'tensorrt'"):
        choose_engine("tensorrt", b, "cpu", "auto")
    assert choose_engine("auto", b, "cpu", "bfloat16")[0] == "torch"
    with pytest.raises(ConfigError, match="'bfloat16' is not one the ONNX engine runs"):
        open_predictor(b, "cpu", "bfloat16", "onnx")
    cached_export(b, "float32")  # made above by engine = "onnx"
    auto = open_predictor(b, "cpu", "float32", "auto")
    [record] = list(tmp_path.glob("auto-*.json"))
    seen = json.loads(record.read_text())
    assert seen["engine"] == ("onnx" if seen["onnx_ms"] < seen["torch_ms"] else "torch")
    assert isinstance(auto, OnnxPredictor if seen["engine"] == "onnx" else Predictor)
    record.write_text(json.dumps({**seen, "engine": "onnx" if seen["engine"] == "torch" else "torch"}))
    again = open_predictor(b, "cpu", "float32", "auto")  # the record decides, without timing again
    assert type(again) is not type(auto)


@pytest.mark.system  # the detached exporter
def test_auto_scores_with_torch_at_once_and_takes_over_its_sessions(bundles, tmp_path, monkeypatch):
    """A cold cache: auto returns at once with torch and starts the export in a detached
    process; when it is there, the next call measures, and scoring goes on in the same
    sessions, as a torch engine alone goes on (float32: the engines agree to 1e-4)."""
    import time

    from emomon.model.auto_engine import AutoEngine
    from emomon.model.engines import open_predictor
    from emomon.model.onnx_engine import CacheEntry
    from emomon.model.predictor import Predictor

    monkeypatch.setenv("EMOMON_ONNX_CACHE", str(tmp_path))
    b = bundles["adaptive"]
    t0 = time.monotonic()
    auto = open_predictor(b, "cpu", "float32", "auto")
    assert isinstance(auto, AutoEngine) and time.monotonic() - t0 < 5  # no export in the way
    assert auto.describe()["encoder"] == str(bundles["adaptive"].parent / "whisper")  # torch's
    alone = Predictor.from_bundle(b, "cpu", "float32")
    segs, keys = sounds(12), ["a", "b", "a", "c", "b", "a", "c", "b", "a", "a", "b", "c"]
    got, want = [], []
    half = 6
    for engine, out in ((auto, got), (alone, want)):
        out += engine.predict(segs[:half], sessions=keys[:half])
    deadline = time.monotonic() + 120
    while not CacheEntry.of(b, "float32").ready():
        assert time.monotonic() < deadline, "the background export did not finish within 120 s"
        time.sleep(0.2)
    for engine, out in ((auto, got), (alone, want)):
        out += engine.predict(segs[half:], sessions=keys[half:])
    assert auto.settled and list(tmp_path.glob("auto-*.json"))
    assert np.abs(shares(got) - shares(want)).max() < 1e-4


def test_cuda_is_chosen_where_there_is_one_and_refused_in_one_sentence_where_not(bundles, exported):
    """device = "cuda" on either engine: the GPU (ONNX Runtime's CUDA provider first) where
    there is one; elsewhere one sentence that says what is missing."""
    import onnxruntime as ort
    import torch

    from emomon.model.engines import choose_engine, open_predictor
    from emomon.model.onnx_engine import OnnxPredictor

    b = bundles["attention"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert OnnxPredictor(exported["attention"], "cuda").session.get_providers()[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(ConfigError, match="this onnxruntime has no CUDA provider .pip install onnxruntime-gpu"):
            OnnxPredictor(exported["attention"], "cuda")
    assert OnnxPredictor(exported["attention"], "cpu").describe()["device"].startswith("cpu")
    if torch.cuda.is_available():
        assert open_predictor(b, "cuda", "float32", "torch").device.type == "cuda"
        assert choose_engine("auto", b, "cuda", "auto") == ("torch", "auto: ONNX Runtime is measured on CPUs only")
    else:
        for engine in ("torch", "auto"):
            with pytest.raises(ConfigError, match="asks for CUDA, but no CUDA GPU is available") as e:
                open_predictor(b, "cuda", "auto", engine)
            assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'tpu' is not a device"):
        OnnxPredictor(exported["attention"], "tpu")


def test_config_and_flag_choose_the_engine(tmp_path):
    from emomon.cli import build_parser
    from emomon.config import load_config

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[runtime]\nengine = "onnx"\n')
    assert load_config(cfg_file).runtime.engine == "onnx"
    cfg_file.write_text('[runtime]\nengine = "fast"\n')
    with pytest.raises(EmomonError, match="runtime.engine"):
        load_config(cfg_file)
    for cmd in (["replay", "--sample"], ["live"], ["serve"], ["batch", "x"]):
        assert build_parser().parse_args([*cmd, "--onnx"]).onnx


# ------------------------------------------------------------------ the shipped default, real speech


@pytest.mark.weights
@pytest.mark.corpora
def test_default_model_export_on_emodb(default_export):
    """float32 within 1e-4 of the Predictor through one adaptive session of real sentences;
    int8 close, with the same top emotion on nearly all (over all 535 sentences: 97.4 %,
    benchmarks/bench_onnx.py; a 60-sentence sample may hold a few of the near-ties); the
    shipped int8 is static, and sentences of five speakers batched score as alone."""
    from support.data import EMODB

    from emomon.model.audio import read_audio
    from emomon.model.onnx_engine import OnnxPredictor
    from emomon.model.predictor import Predictor

    files = sorted((EMODB / "wav").glob("*.wav"))[::8][:60]
    audio = [read_audio(f) for f in files]
    ref = Predictor.from_bundle(None, "cpu", "float32")
    want = np.concatenate([shares(ref.predict([a])) for a in audio])
    path, sha = default_export("float32")
    f32 = OnnxPredictor(path, "cpu", sha256=sha)
    got = np.concatenate([shares(f32.predict([a])) for a in audio])
    assert np.abs(got - want).max() < 1e-4
    path, sha = default_export("int8")
    q8 = OnnxPredictor(path, "cpu", sha256=sha)
    fresh = []
    for a in audio:  # each sentence a fresh session: no drift carried from one to the next
        ref.reset_session()
        q8.reset_session()
        fresh.append((shares(ref.predict([a]))[0], shares(q8.predict([a]))[0]))
    same = np.mean([w.argmax() == g.argmax() for w, g in fresh])
    assert same >= 0.93
    assert max(np.abs(w - g).max() for w, g in fresh) < 0.1
    assert q8.batches and q8.meta["quantisation"] == "static"  # the shipped calibration
    segs, keys = audio[:16], [f"speaker {i % 5}" for i in range(16)]
    alone, batched = alone_and_batched(path, segs, keys)
    assert max(p.batch_size for p in batched) > 1
    assert np.abs(shares(alone) - shares(batched)).max() < 1e-5


# ------------------------------------------------------------------ outside Python

NODE_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "node"


@pytest.mark.system
@pytest.mark.weights
def test_node_example_scores_like_the_predictor(default_export):
    """docs/examples/node/score.mjs under onnxruntime-node (npm ci from its lock file, the
    CPU binaries the package bundles): the shipped default's shares of the bundled sample,
    scored as one segment in a fresh session, within 1e-3 of the Predictor's."""
    import shutil
    import subprocess

    from support.data import SAMPLE

    from emomon.model.audio import read_audio
    from emomon.model.predictor import Predictor

    assert shutil.which("node") and shutil.which("npm"), "Node.js 20 and npm are part of the machine"
    if not (NODE_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_EXAMPLE, check=True, timeout=600)
    model, _ = default_export("float32")
    run = subprocess.run(
        ["node", "score.mjs", str(model), str(SAMPLE)], cwd=NODE_EXAMPLE, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    [want] = Predictor.from_bundle(None, "cpu", "float32").predict([read_audio(SAMPLE)])
    assert list(got) == list(want.shares)
    assert max(abs(got[e] - want.shares[e]) for e in got) < 1e-3
    bad = subprocess.run(
        ["node", "score.mjs", str(model), str(model)], cwd=NODE_EXAMPLE, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and bad.stderr.strip() == f"score.mjs: {model} is not a WAV file"
