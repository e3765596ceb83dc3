"""Which engine runs a bundle: torch (model/predictor.py) or ONNX Runtime (model/onnx_engine.py).

`[runtime] engine`:
- "torch": the Predictor, any bundle, any dtype;
- "onnx": the bundle's exported graph under onnxruntime (Whisper bundles with pooled,
  Architecture-3 regressors, as the shipped default; float32 or int8);
- "auto" (the default): whichever of the two is faster here. Where ONNX Runtime can run
  the bundle (onnxruntime and the exporter installed, a Whisper bundle, a CPU, dtype auto,
  float32 or int8) both score a 2 s segment a few times once the export is in the cache,
  and the faster one is kept (~/.cache/emomon/onnx/auto-*.json, one per bundle, CPU and
  dtype, so every command here runs the same engine). Until the export is there, torch scores while a background process
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


def _auto(folder: Path, device: str, dtype: str, threads: int | None):
    """auto where ONNX Runtime can run the bundle: the engine measured here before; else,
    with the export in the cache, measure now; else torch at once, the export made in the
    background and measured when it is there (model/auto_engine.py)."""
    from .auto_engine import AutoEngine, measure, measured
    from .onnx_engine import CacheEntry, OnnxPredictor, onnx_precision
    from .predictor import Predictor

    seen = measured(folder, dtype)
    if seen is not None:
        chosen, why = seen
        if chosen == "onnx":
            return OnnxPredictor.from_bundle(folder, device, dtype, threads), why
        return Predictor.from_bundle(folder, device, dtype), why
    torch_engine = Predictor.from_bundle(folder, device, dtype)
    if CacheEntry.of(folder, onnx_precision(dtype, device)).ready():
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
