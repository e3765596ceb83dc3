"""Which engine runs a bundle: torch (model/predictor.py) or ONNX Runtime (model/onnx_engine.py).

`[runtime] engine`:
- "torch": the Predictor, any bundle, any dtype;
- "onnx": the bundle's exported graph under onnxruntime (Whisper bundles with pooled,
  Architecture-3 regressors, as the shipped default; float32 or int8);
- "auto": whichever of the two is faster here. Where ONNX Runtime can run the bundle
  (onnxruntime and the exporter installed, a Whisper bundle, a CPU, dtype auto, float32 or
  int8) both score a 2 s segment a few times on first use, and the faster one is kept
  in the cache (~/.cache/emomon/onnx/auto-*.json, one per bundle, CPU, threads and dtype);
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


def _faster(folder: Path, device: str, dtype: str, threads: int | None):
    """Time both engines on a 2 s segment (or read the last such measurement here) and
    return the faster one, loaded, with why."""
    import hashlib
    import json
    import statistics
    import time

    import numpy as np
    import torch

    from .compute import cpu_name
    from .export import bundle_digest, cache_dir
    from .files import write_atomic
    from .onnx_engine import OnnxPredictor
    from .predictor import Predictor

    threads = threads or torch.get_num_threads()
    key = hashlib.sha256(f"{bundle_digest(folder)} {cpu_name()} {threads} {dtype}".encode()).hexdigest()[:24]
    record = cache_dir() / f"auto-{key}.json"
    try:
        seen = json.loads(record.read_text())
        chosen = seen["engine"] if seen["engine"] in ("torch", "onnx") else None
    except (OSError, ValueError, KeyError, TypeError):
        chosen = None
    if chosen is not None:
        why = f"auto: measured faster here ({seen['torch_ms']:.1f} ms torch, {seen['onnx_ms']:.1f} ms onnx)"
        if chosen == "onnx":
            return OnnxPredictor.from_bundle(folder, device, dtype, threads), why
        return Predictor.from_bundle(folder, device, dtype), why
    segment = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    engines = {"torch": Predictor.from_bundle(folder, device, dtype), "onnx": None}
    engines["onnx"] = OnnxPredictor.from_bundle(folder, device, dtype, threads)
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
    write_atomic(record, (json.dumps(seen) + "\n").encode())
    return engines[chosen], f"auto: measured faster here ({ms['torch']:.1f} ms torch, {ms['onnx']:.1f} ms onnx)"


def open_predictor(
    bundle: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    engine: str = "torch",
    encoder_name: str | None = None,
    threads: int | None = None,
):
    """A Predictor or an OnnxPredictor (same interface) for the bundle (None: the default)."""
    folder = Path(DEFAULT_BUNDLE if bundle is None else bundle)
    chosen, why = choose_engine(engine, folder, device, dtype)
    if chosen == "measure" and encoder_name:
        chosen, why = "torch", "auto: a local encoder folder runs on torch only"
    if chosen == "measure":
        predictor, why = _faster(folder, device, dtype, threads)
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
