"""Shared fixtures: tiny encoders saved to temp folders, real Emo-DB clips, the default
model loaded once; the helpers test modules import are in tests/support.

Tiers. A test is in the fast tier (`make test-fast`) unless marked:
- `corpora`: reads real speech under ../shared/data (EMOMON_TEST_DATA overrides the
  folder; every test that uses the `clips` or `emodb_rows` fixtures is marked for it);
- `weights`: loads the real pinned Whisper-base or speaker-encoder weights;
- `system`: starts processes, a sound server, a browser, nginx, Ray, or builds the wheel.
The fast tier runs without the corpora, and a test outside `system` that starts a process
fails, so the tiers stay what they say. `make test` runs them all, as CI does, on two
pytest-xdist workers: while one waits on real-time audio, a server or a browser, the other
computes. A module runs on one worker (`--dist loadfile`: its fixtures, test_live's sound
server); Ray, whose `ray stop` ends every Ray process on the machine, runs one test (or
test_batch's cluster) at a time: the `ray_alone` fixture, a lock across processes.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.data import ASED, BANGLASER, EMODB, EYASE, INDOWAVE, NEMO, RAVDESS, load_clip
from support.models import save_tiny_ssl
from support.processes import machine_lock

from emomon.model.audio import SAMPLE_RATE

CORPUS_FIXTURES = {"clips", "emodb_rows"}
# processes libraries start for themselves: ctypes.util.find_library's lookups, and
# matplotlib's one-time font scan on a machine without its font cache yet
LIBRARY_LOOKUPS = {"ldconfig", "gcc", "cc", "ld", "objdump", "x86_64-linux-gnu-gcc", "fc-list"}


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


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX cache for the whole run, shared by both xdist workers and the processes the
    tests start: the shipped default is exported once per precision, and never into the
    user's own ~/.cache (a test about the cache itself sets a folder of its own)."""
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "onnx-cache"
    os.environ["EMOMON_ONNX_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _auto_engine_settled(request: pytest.FixtureRequest, _onnx_cache: Path) -> None:
    """Processes that load the shipped default run `engine = "auto"` (config.toml): before the
    first of them (before any module's fixtures start one), the default's int8 export is made
    in the run's cache, so that every process finds it, one measures (model/auto_engine.py)
    and all read that choice. Without this, runs that compare two processes could straddle
    the moment auto switches engines (test_onnx's tests switch for themselves, in caches of
    their own). Only where the run holds such tests: the fast tier exports nothing."""
    if any(i.get_closest_marker("system") and i.get_closest_marker("weights") for i in request.session.items):
        from emomon.model.onnx_engine import cached_export

        cached_export(None, "int8")


@pytest.fixture(scope="session")
def default_export():
    """The shipped default's ONNX export in a precision, through the run's cache
    (model/onnx_engine.py: cached_export): (path, SHA-256)."""
    from emomon.model.onnx_engine import cached_export

    return lambda precision="float32": cached_export(None, precision)


@pytest.fixture
def ray_alone():
    """This test is the only one on the machine using Ray while it runs (tests/support/processes.py)."""
    with machine_lock("ray"):
        yield


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


@pytest.fixture(scope="session")
def _default_parts():
    """The shipped default bundle and its encoder, loaded once for the whole run."""
    from emomon.model.bundle import DEFAULT_BUNDLE, load_bundle
    from emomon.model.encoder import load_encoder

    bundle = load_bundle(DEFAULT_BUNDLE)
    return bundle, load_encoder(bundle.encoder, "cpu", "auto", adapter=bundle.adapter)


@pytest.fixture
def default_predictor(request: pytest.FixtureRequest, _default_parts):
    """The shipped default model on the CPU, as `Predictor.from_bundle(device="cpu")` gives
    it: the weights are shared by every test, the sessions are new for each."""
    from emomon.model.predictor import Predictor

    assert "weights" in request.keywords, f"{request.node.nodeid} loads the default model: mark it pytest.mark.weights"
    predictor = Predictor(*_default_parts, "cpu")
    predictor.name = "default"
    return predictor
