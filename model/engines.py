"""Which engine runs a bundle: torch (model/predictor.py) or ONNX Runtime (model/onnx_engine.py).

`[runtime] engine`:
- "torch": the Predictor, any bundle, any dtype;
- "onnx": the bundle's exported graph under onnxruntime (Whisper bundles with pooled,
  Architecture-3 regressors, as the shipped default; float32 or int8);
- "auto" (the default): whichever of the two is faster here. Where ONNX Runtime can run
  the bundle (onnxruntime and the exporter installed, a Whisper bundle, a CPU, dtype auto,
  float32 or int8) both score a 2 s segment a few times once the export is in the cache,
  and the faster one is kept (~/.cache/emomon/onnx/auto-*.json, one per bundle, CPU,
  threads and dtype). Until the export is there, torch scores while a background process
  makes it (model/auto_engine.py), so the first run starts as fast as torch alone.
  torch everywhere else. Which one wins depends on the CPU (docs/benchmarks.md, "ONNX
  Runtime").

Every caller (live, replay, serve, batch, evaluate) opens its model through
`open_predictor`, so the setting means the same everywhere.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from .bundle import DEFAULT_BUNDLE, MANIFEST
from .errors import ConfigError

log = logging.getLogger("emomon")

ENGINES = ("auto", "torch", "onnx")


def _exportable(bundle: Path) -> bool:
    import json

    from .export import EXPORTABLE_KINDS

    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
        return manifest["encoder"]["kind"] in EXPORTABLE_KINDS and manifest["regressor"]["arch"] == 3
    except (OSError, ValueError, KeyError, TypeError):
        return False  # the torch path reports what is wrong with the bundle


def choose_engine(engine: str, bundle: Path, device: str, dtype: str) -> tuple[str, str]:
    """The engine for `engine` and why; "measure" where auto has to time both."""
    if engine not in ENGINES:
        raise ConfigError(f"Setting engine = '{engine}' is not one of {', '.join(ENGINES)}.")
    if engine != "auto":
        return engine, "as configured"
    if not all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript")):
        return "torch", "auto: onnxruntime is not installed"
    if not _exportable(bundle):
        return "torch", "auto: the bundle has no ONNX export (a Whisper encoder and pooled regressors have)"
    if dtype not in ("auto", "float32", "int8"):
        return "torch", f"auto: dtype {dtype} runs on torch only"
    from .compute import resolve_device

    if resolve_device(device).type != "cpu":
        return "torch", "auto: ONNX Runtime is measured on CPUs only"
    return "measure", "auto"


def _record(folder: Path, dtype: str, threads: int) -> Path:
    """Where auto keeps its measurement for this bundle, CPU, thread count and dtype."""
    import hashlib

    from .compute import cpu_name
    from .export import bundle_digest, cache_dir

    key = hashlib.sha256(f"{bundle_digest(folder)} {cpu_name()} {threads} {dtype}".encode()).hexdigest()[:24]
    return cache_dir() / f"auto-{key}.json"


def measured(folder: Path, dtype: str, threads: int) -> tuple[str, str] | None:
    """The engine auto chose here before, and why; None when it has not measured yet."""
    import json

    try:
        seen = json.loads(_record(folder, dtype, threads).read_text())
        if seen["engine"] in ("torch", "onnx"):
            ms = f"{seen['torch_ms']:.1f} ms torch, {seen['onnx_ms']:.1f} ms onnx"
            return seen["engine"], f"auto: measured faster here ({ms})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def measure(folder: Path, device: str, dtype: str, threads: int | None, torch_engine):
    """Time the torch engine and the (cached) ONNX export on a 2 s segment, record which is
    faster, and return the ONNX engine if it is (else None), with why."""
    import json
    import statistics
    import time

    import numpy as np
    import torch

    from .compute import cpu_name
    from .files import write_atomic
    from .onnx_engine import OnnxPredictor

    threads = threads or torch.get_num_threads()
    segment = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    engines = {"torch": torch_engine, "onnx": OnnxPredictor.from_bundle(folder, device, dtype, threads)}
    ms = {}
    for name, p in engines.items():
        p.predict([segment], update_session=False)  # warm-up
        times = []
        for _ in range(5):
            t = time.perf_counter()
            p.predict([segment], update_session=False)
            times.append((time.perf_counter() - t) * 1e3)
        ms[name] = statistics.median(times)
    chosen = min(ms, key=ms.__getitem__)
    seen = {"engine": chosen, "torch_ms": ms["torch"], "onnx_ms": ms["onnx"], "cpu": cpu_name(), "threads": threads,
            "dtype": dtype}  # fmt: skip
    write_atomic(_record(folder, dtype, threads), (json.dumps(seen) + "\n").encode())
    why = f"auto: measured faster here ({ms['torch']:.1f} ms torch, {ms['onnx']:.1f} ms onnx)"
    return (engines["onnx"] if chosen == "onnx" else None), why


def _auto(folder: Path, device: str, dtype: str, threads: int | None):
    """auto where ONNX Runtime can run the bundle: the engine measured here before; else,
    with the export in the cache, measure now; else torch at once, the export made in the
    background and measured when it is there (model/auto_engine.py)."""
    import torch

    from .auto_engine import AutoEngine, exported
    from .onnx_engine import OnnxPredictor, onnx_precision
    from .predictor import Predictor

    seen = measured(folder, dtype, threads or torch.get_num_threads())
    if seen is not None:
        chosen, why = seen
        if chosen == "onnx":
            return OnnxPredictor.from_bundle(folder, device, dtype, threads), why
        return Predictor.from_bundle(folder, device, dtype), why
    torch_engine = Predictor.from_bundle(folder, device, dtype)
    if exported(folder, onnx_precision(dtype, device)):
        onnx, why = measure(folder, device, dtype, threads, torch_engine)
        return (onnx or torch_engine), why
    engine = AutoEngine(torch_engine, folder, device, dtype, threads)
    return engine, engine.why


def open_predictor(
    bundle: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    engine: str = "auto",
    encoder_name: str | None = None,
    threads: int | None = None,
):
    """A Predictor or an OnnxPredictor (same interface) for the bundle (None: the default)."""
    folder = Path(DEFAULT_BUNDLE if bundle is None else bundle)
    chosen, why = choose_engine(engine, folder, device, dtype)
    if chosen == "measure" and encoder_name:
        chosen, why = "torch", "auto: a local encoder folder runs on torch only"
    if chosen == "measure":
        predictor, why = _auto(folder, device, dtype, threads)
        log.info("engine %s (%s)", "onnx" if type(predictor).__name__ == "OnnxPredictor" else "torch", why)
        return predictor
    log.info("engine %s (%s)", chosen, why)
    if chosen == "onnx":
        from .onnx_engine import OnnxPredictor

        if encoder_name:
            raise ConfigError("Setting model.encoder (a local encoder folder) runs on engine = 'torch' only.")
        return OnnxPredictor.from_bundle(folder, device, dtype, threads)
    from .predictor import Predictor

    return Predictor.from_bundle(folder, device, dtype, encoder_name=encoder_name)
