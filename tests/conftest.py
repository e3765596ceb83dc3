"""Shared fixtures: tiny encoders saved to temp folders, real Emo-DB clips, small bundles.

Tiers. A test is in the fast tier (`make test-fast`) unless marked:
- `corpora`: reads real speech under ../shared/data (EMOMON_TEST_DATA overrides the
  folder; every test that uses the `clips` or `emodb_rows` fixtures is marked for it);
- `weights`: loads the real pinned Whisper-base or speaker-encoder weights;
- `system`: starts processes, a sound server, a browser, nginx, Ray, or builds the wheel.
The fast tier runs without the corpora, and a test outside `system` that starts a process
fails, so the tiers stay what they say. `make test` runs them all, as CI does.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from emomon.model.audio import SAMPLE_RATE, read_audio
from emomon.model.tracker import SpeakerSettings

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "streamer" / "samples" / "emodb_speaker11.wav"  # the bundled sample: six sentences, 1 s pauses
DATA = Path(os.environ.get("EMOMON_TEST_DATA") or REPO.parent / "shared" / "data")
EMODB = DATA / "emodb"
RAVDESS = DATA / "ravdess"
NEMO = DATA / "nemo"
ASED, BANGLASER = DATA / "ased", DATA / "banglaser"
EYASE, INDOWAVE = DATA / "eyase", DATA / "indowave"
CORPUS_FIXTURES = {"clips", "emodb_rows"}
# processes libraries start for themselves: ctypes.util.find_library's lookups, and
# matplotlib's one-time font scan on a machine without its font cache yet
LIBRARY_LOOKUPS = {"ldconfig", "gcc", "cc", "ld", "objdump", "x86_64-linux-gnu-gcc", "fc-list"}
EMOTIONS9 = (
    "Anger",
    "Boredom",
    "Calmness",
    "Concentration",
    "Determination",
    "Excitement",
    "Interest",
    "Sadness",
    "Tiredness",
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the automatic marks count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CORPUS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.corpora)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The corpora must be there when a selected test reads them."""
    if any("corpora" in item.keywords for item in session.items):
        corpora = (("Emo-DB", EMODB), ("RAVDESS", RAVDESS), ("nEMO", NEMO), ("ASED", ASED), ("BanglaSER", BANGLASER))
        for name, folder in (*corpora, ("EYASE", EYASE), ("IndoWave", INDOWAVE)):
            if not folder.is_dir():
                raise pytest.UsageError(
                    f"{name} is missing at {folder}: the corpora tier needs it (make test-fast runs without)."
                )


@pytest.fixture(autouse=True)
def _tiers_hold(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test outside the `system` tier may not start a process, and one outside `weights`
    may not read the pinned weights: the fast tier stays fast."""
    from emomon.model import speaker, whisper

    def refuse(what: str, tier: str):
        def fail(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} {what}: mark it pytest.mark.{tier}")

        return fail

    if "system" not in request.keywords:
        popen, refused = subprocess.Popen.__init__, refuse("starts a process", "system")

        def only_library_lookups(self, args, *rest, **kwargs):  # ctypes.util.find_library asks ldconfig or gcc
            first = args if isinstance(args, str | os.PathLike) else args[0]
            if os.path.basename(str(first).split()[0]) in LIBRARY_LOOKUPS:
                return popen(self, args, *rest, **kwargs)
            return refused()

        monkeypatch.setattr(subprocess.Popen, "__init__", only_library_lookups)
    if "weights" not in request.keywords:
        for module in (speaker, whisper):
            monkeypatch.setattr(module, "read_pinned", refuse("reads the pinned weights", "weights"))


def load_clip(name: str) -> np.ndarray:
    """An Emo-DB file as float32 mono 16 kHz."""
    return read_audio(EMODB / "wav" / name)


@pytest.fixture(scope="session")
def emodb_rows() -> list[dict[str, str]]:
    with (EMODB / "labels.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    """Three real utterances of different lengths: anger 2.0 s, sadness 1.3 s, neutral 0.7 s
    (the first seconds of each file)."""
    seconds = {"03a01Wa.wav": 2.0, "03a02Ta.wav": 1.3, "03a01Nc.wav": 0.7}
    return [load_clip(n)[: int(s * SAMPLE_RATE)] for n, s in seconds.items()]


def save_tiny_ssl(folder: Path, kind: str = "hubert", norm: str = "layer", seed: int = 0) -> Path:
    """A tiny HuBERT / wav2vec 2.0 with random weights, saved the way the hub stores one."""
    import torch
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    Config, Model = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model)}[kind]
    cfg = Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(seed)
    Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=norm == "layer", return_attention_mask=norm == "layer").save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large-style (layer norm, attention mask) tiny HuBERT."""
    return save_tiny_ssl(tmp_path_factory.mktemp("hubert_layer"))


@pytest.fixture(scope="session")
def tiny_hubert_group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base-style (group norm) tiny HuBERT."""
    return save_tiny_ssl(tmp_path_factory.mktemp("hubert_group"), norm="group")


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ssl(tmp_path_factory.mktemp("wav2vec2"), kind="wav2vec2")


TINY_REGRESSOR = dict(conv_channels=(24, 16, 12), lstm_hidden=16, ff_dims=(12, 8, 6))


def make_bundle(encoder, emotions=EMOTIONS9, seed: int = 0, **regressor):
    """A randomly initialised bundle for `encoder` with tiny regressors."""
    import torch

    from emomon.model.bundle import Bundle, new_bank
    from emomon.model.specs import RegressorSpec

    spec = RegressorSpec.paper(**{**TINY_REGRESSOR, **regressor})
    mixed = encoder.num_layers if encoder.spec.layer == "weighted" else 0
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    return Bundle(
        emotions=tuple(emotions),
        encoder=encoder.spec,
        regressor=spec,
        input_dim=encoder.dim,
        mixed_layers=mixed,
        norm_mean=gen.normal(0, 0.1, encoder.dim).tolist(),
        norm_std=gen.uniform(0.5, 2.0, encoder.dim).tolist(),
        bank=new_bank(spec, tuple(emotions), encoder.dim, mixed).eval(),
        metrics={"note": "random weights for tests"},
        provenance={"made_by": "tests"},
    )


def mini_corpus(root: Path, source: Path, per_speaker: int, speakers: int, distinct: tuple[str, ...] = ()) -> Path:
    """A few real files of each of a corpus's first `speakers` speakers, with its labels.csv
    (absolute paths); with `distinct` columns, at most one file per speaker and value of them."""
    with (source / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    keep, count, seen = [], {}, set()
    for r in rows:
        spk, key = r["speaker"], (r["speaker"], *(r[c] for c in distinct))
        if (spk in count or len(count) < speakers) and count.get(spk, 0) < per_speaker and key not in seen:
            count[spk] = count.get(spk, 0) + 1
            if distinct:
                seen.add(key)
            keep.append({**r, "file": str(source / r["file"])})
    root.mkdir(parents=True)
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return root


def kill_writer(log: str, path: Path, min_bytes: int) -> None:
    """Run a process that writes rows to the log `log` (a constructor call on `path`) as
    fast as it can, and SIGKILL it once `path` holds `min_bytes`: what a crash leaves."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import itertools\nfrom emomon.streamer.outputs.csv_log import CsvLog\n"
        "from emomon.streamer.outputs.record import Row\n"
        "from emomon.streamer.outputs.jsonl_log import JsonlLog\n"
        f"log = {log}\n"
        "for i in itertools.count():\n"
        "    log.write(Row('mic', i, i, i + 1.0, shares={'anger': 0.5, 'sadness': 0.25, 'neutral': 0.25}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < min_bytes):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`emomon ARGS` in `cwd` through main() in this process: its exit code and what it
    printed, for tests where a process of its own proves nothing more (the real weights then
    load in about 0.5 s instead of 6)."""
    import contextlib
    import io

    from emomon.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["emomon", *args], code, out.getvalue(), err.getvalue())


# -- helpers the test modules share (one place: no test module imports another) ----------
def speech_sentence(name: str) -> np.ndarray:
    """An Emo-DB ("03a01Wa.wav") or nEMO ("SM0_anger_1.opus") sentence, its pauses trimmed."""
    from emomon.streamer.audio.segmenter import speech_span

    wav = read_audio(NEMO / "audio" / name.split("_")[0] / name) if name.endswith(".opus") else load_clip(name)
    a, b = speech_span(wav)
    return wav[a:b]


# [speakers] as the speaker tests run it: raw GE2E embeddings at stated thresholds (the mechanics;
# the default back-end's own test is tests/test_speaker_backend.py)
SAME = SpeakerSettings(enabled=True, same=0.6, turn=0.55, backend="none")
SAME_TOML = f'[speakers]\nbackend = "{SAME.backend}"\nsame = {SAME.same}\nturn = {SAME.turn}\n'  # SAME as config.toml


def build_conversation(folder: Path) -> tuple[Path, list[tuple[float, float, str]]]:
    """nEMO's SM0 (a man) and EB0 (a woman) taking turns through their emotions, 1.2 s apart
    (the VAD closes a segment between turns), the last answer coming without a pause."""
    turns = [("SM0", ("anger_4", "anger_5")), ("EB0", ("neutral_4", "neutral_5")), ("SM0", ("sadness_4", "sadness_5")),
             ("EB0", ("happiness_4", "happiness_5")), ("SM0", ("neutral_6", "neutral_7")),
             ("EB0", ("anger_6", "anger_7"))]  # fmt: skip
    gap = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    pieces, ref, t = [gap], [], len(gap) / SAMPLE_RATE
    for k, (who, names) in enumerate(turns):
        wav = np.concatenate([speech_sentence(f"{who}_{n}.opus") for n in names])
        ref.append((t, t + len(wav) / SAMPLE_RATE, who))
        pause = gap if k < len(turns) - 2 else gap[:0]  # the last two turns: no pause between them
        pieces += [wav, pause]
        t += (len(wav) + len(pause)) / SAMPLE_RATE
    pieces.append(gap)
    import soundfile as sf

    path = folder / "call.wav"
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return path, ref


def save_tiny_whisper(folder: Path, n_mels: int = 80, seed: int = 0) -> Path:
    """A tiny Whisper (encoder and decoder) with random weights, saved as the hub stores one."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    cfg = WhisperConfig(
        num_mel_bins=n_mels, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    WhisperModel(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(folder)
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`emomon serve` in its own process on a free loopback port, ready once /healthz answers."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        import sys
        import time

        self.port = free_port()
        cmd = [sys.executable, "-m", "emomon.cli", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/healthz")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read()) from None
                time.sleep(0.1)
        raise RuntimeError("emomon serve did not answer /healthz within 60 s")

    def get(self, path: str) -> tuple[int, str]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()

    def stop(self) -> tuple[str, str]:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.communicate(timeout=60)


def pcm(rate: int = 16000, path: Path = SAMPLE) -> bytes:
    """A file as 16-bit PCM at `rate`, as a client sends it."""
    import soundfile as sf
    import soxr

    audio, sr = sf.read(path, dtype="float32")
    if sr != rate:
        audio = soxr.resample(audio, sr, rate)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def stream(url: str, data: bytes, chunk_s: float = 0.25, rate: int = 16000, end: bool = True, **kw):
    """Send `data` in chunks, then {"type": "end"}; return every message and the close code."""
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    messages = []
    with connect(url, max_size=None, open_timeout=20, **kw) as ws:
        messages.append(json.loads(ws.recv(timeout=20)))
        step = int(chunk_s * rate) * 2
        for i in range(0, len(data), step):
            ws.send(data[i : i + step])
        if end:
            ws.send(json.dumps({"type": "end"}))
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


def segments(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "segment"]


def segment_marks(svg: Path) -> int:
    """The segment marks of an `emomon plot` SVG: the paths of its "segments" group."""
    import xml.etree.ElementTree as ET

    ns = {"svg": "http://www.w3.org/2000/svg"}
    group = ET.parse(svg).getroot().find(".//svg:g[@id='segments']", ns)
    assert group is not None, f"{svg} has no segments group"
    return len(group.findall(".//svg:path", ns))


def make_compare23(root: Path, n_train: int = 16, n_devel: int = 8, n_test: int = 4) -> Path:
    """Real Emo-DB speech in the ComParE 2023 layout, with share labels that follow loudness
    (so that there is something to learn) and withheld test labels."""
    files = sorted(p.name for p in (EMODB / "wav").glob("*.wav"))[:: 535 // (n_train + n_devel + n_test)]
    (root / "wav").mkdir(parents=True)
    (root / "lab").mkdir()
    rng = np.random.default_rng(0)
    import soundfile as sf

    rows = []
    for i, name in enumerate(files[: n_train + n_devel + n_test]):
        audio = load_clip(name)[: int(1.2 * SAMPLE_RATE)]
        fname = f"{i:05d}.wav"
        sf.write(root / "wav" / fname, audio, SAMPLE_RATE)
        loud = float(np.sqrt(np.mean(audio**2)))
        shares = np.clip(rng.uniform(0, 0.3, 9) + loud * np.linspace(0, 3, 9), 0, 1)
        rows.append({"filename": fname, **{e: f"{v:.4f}" for e, v in zip(EMOTIONS9, shares)}})
    parts = {"train": rows[:n_train], "devel": rows[n_train : n_train + n_devel], "test": rows[n_train + n_devel :]}
    for split, part in parts.items():
        cols = ["filename"] if split == "test" else ["filename", *EMOTIONS9]
        with (root / "lab" / f"{split}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(part)
    return root
