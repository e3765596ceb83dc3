"""The ONNX Runtime engine: the Predictor's interface over a bundle's exported graph.

`[runtime] engine = "onnx"` (or `auto`, where it is the faster engine) runs the graph that
`emomon export` writes (model/export.py) under onnxruntime: CPU, or CUDA where
onnxruntime's CUDA provider and a GPU are there. The export happens once per bundle and
precision and is cached under ~/.cache/emomon/onnx by the bundle's digest, with a
record of the file's SHA-256 that is checked before every load.

Batched: the graph takes a padded batch of segments, each with its own session's
statistics, and gives each the result it gets alone (float32, and int8 with fixed scales:
model/quantise.py), so the engine runs what waits from several streams in one call; an
export with dynamic int8, whose scales come from the whole call, runs one segment per
call. Adaptive bundles keep each session's statistics here, as (3, D) float64 arrays that
go into the graph and come back updated; a session's segments go in successive calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .bundle import DEFAULT_BUNDLE
from .compute import plan_batches
from .errors import ConfigError, require
from .export import EXPORT_VERSION, ExportError, bundle_digest, cache_dir, export_bundle
from .files import exclusive, write_atomic
from .interface import IN_PROCESS_HEALTH
from .predictor import Prediction, SessionStates, check_segment, check_sessions
from .whisper import encoder_frames

log = logging.getLogger("emomon")

MAX_SAMPLES = 30 * SAMPLE_RATE  # Whisper's positions: 30 s


def onnx_precision(dtype: str, device: str) -> str:
    """The exported precision for [runtime] dtype: int8 on a CPU for "auto" (as torch's
    choice on CPUs without fast bfloat16), float32 on a GPU; bfloat16 and float16 are
    torch's only."""
    if dtype in ("float32", "int8"):
        return dtype
    if dtype == "auto":
        return "float32" if device.startswith("cuda") else "int8"
    raise ConfigError(f"Setting dtype = '{dtype}' is not one the ONNX engine runs (float32, int8 or auto).")


@dataclass(frozen=True)
class CacheEntry:
    """Where the cache keeps a bundle's export in one precision: the file, its SHA-256
    record and the lock its exporter holds."""

    path: Path

    @classmethod
    def of(cls, folder: str | Path, precision: str) -> CacheEntry:
        return cls(cache_dir() / f"{bundle_digest(folder)[:32]}-{precision}.onnx")

    @property
    def record(self) -> Path:
        return self.path.with_suffix(".sha256")

    @property
    def lock(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.lock")

    def ready(self) -> bool:
        """Whether the export is there (with its record: it is renamed into place after it)."""
        return self.path.exists() and self.record.exists()


def cached_export(bundle: str | Path | None, precision: str) -> tuple[Path, str]:
    """The bundle's export in this precision and its recorded SHA-256: from the cache, or
    exported into it now. One process exports a key at a time (a lock file per key); the
    others wait and then read what it wrote. The digest record is in place before the
    export is renamed into place, so a file in the cache always has its record."""
    folder = Path(DEFAULT_BUNDLE if bundle is None else bundle)
    entry = CacheEntry.of(folder, precision)
    path, record = entry.path, entry.record
    if entry.ready():
        return path, record.read_text().strip()
    with exclusive(entry.lock, f"The ONNX cache entry '{path.name}'"):
        if not entry.ready():  # else another process exported it while this one waited
            log.info("exporting %s to ONNX (%s) once: %s", folder, precision, path)
            export_bundle(folder, path, precision, before_rename=lambda info: write_atomic(
                record, (info.sha256 + "\n").encode()))  # fmt: skip
        return path, record.read_text().strip()


def verify(data: bytes, path: Path, expected: str | None) -> None:
    """Refuse an export whose bytes are not those recorded when it was written."""
    if expected is None:
        return
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ExportError(
            f"The ONNX export '{path}' fails its digest (SHA-256 {actual[:16]}..., recorded "
            f"{expected[:16]}...): it was changed or damaged; delete it and emomon exports the bundle again."
        )


class OnnxPredictor:
    """An exported bundle under ONNX Runtime: the ONNX Engine (model/interface.py)."""

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        sha256: str | None = None,
        max_batch_s: float = 64.0,
    ) -> None:
        require("onnx", "The ONNX engine", "onnxruntime")
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ExportError(f"ONNX file '{path}' does not exist.")
        try:
            data = path.read_bytes()  # checked, then parsed: the same bytes
        except OSError as e:
            raise ExportError(f"ONNX file '{path}' cannot be read: {e.strerror or e}.") from e
        verify(data, path, sha256)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = self._providers(ort, device)
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise ExportError(f"ONNX file '{path}' cannot be loaded by ONNX Runtime: {str(e).splitlines()[0]}") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.emotions = tuple(json.loads(meta["emotions"]))
            self.attention_hop_s = float(meta.get("attention_hop_s", "0.02"))
            self._stride = int(meta.get("attention_stride", "1"))
            version = int(meta["export_version"])
        except (KeyError, ValueError, TypeError) as e:
            raise ExportError(f"ONNX file '{path}' is not an emomon export (its metadata lacks {e}).") from e
        if version != EXPORT_VERSION:
            raise ExportError(
                f"ONNX file '{path}' is emomon export version {version}; this emomon reads version {EXPORT_VERSION}."
            )
        self.meta, self.path = meta, path
        self.name = meta.get("bundle", path.stem)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._adaptive = "session" in inputs
        self._outputs = [o.name for o in self.session.get_outputs() if o.name != "emotions"]
        self._dim = inputs["session"].shape[2] if self._adaptive else 0
        # float32 and static int8 give a segment the same result in any batch; an export with
        # dynamic int8 (scales from each call's activations) runs one segment per call
        self.batches = meta.get("batch_independent", "false") == "true"
        self.max_batch_samples = int(max_batch_s * SAMPLE_RATE)
        self._sessions = SessionStates(self._new_state)
        self.state = self._new_state()
        self._ort_version = ort.__version__

    @staticmethod
    def _providers(ort, device: str) -> list[str]:
        available = ort.get_available_providers()
        cuda = "CUDAExecutionProvider" in available
        if device.startswith("cuda") and not cuda:
            raise ConfigError(
                f"Setting device = '{device}' asks for CUDA, but this onnxruntime has no CUDA provider "
                "(pip install onnxruntime-gpu)."
            )
        if device.startswith("cuda") or (device == "auto" and cuda):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device not in ("auto", "cpu"):
            raise ConfigError(f"Setting device = '{device}' is not a device (use auto, cpu or cuda).")
        return ["CPUExecutionProvider"]

    @classmethod
    def from_bundle(
        cls, path: str | Path | None = None, device: str = "auto", dtype: str = "auto", threads: int | None = None
    ) -> OnnxPredictor:
        """The bundle (default: the shipped one) exported once into the cache, then loaded."""
        onnx_file, record = cached_export(path, onnx_precision(dtype, device))
        return cls(onnx_file, device, threads, sha256=record)

    def describe(self) -> dict[str, str]:
        provider = self.session.get_providers()[0].replace("ExecutionProvider", "").lower()
        return {
            "model": self.name,
            "encoder": f"{self.meta.get('encoder', '?')} (ONNX)",
            "adapter": self.meta.get("adapter", ""),
            "emotions": f"{len(self.emotions)} emotions",
            "device": f"{provider} (onnxruntime {self._ort_version})",
            "dtype": self.meta.get("precision", "float32"),
        }

    # Sessions: as Predictor's, with the graph's (3, D) state instead of a FeatureNorm.
    def _new_state(self) -> np.ndarray:
        return np.zeros((3, self._dim), dtype=np.float64)

    @property
    def adapts(self) -> bool:
        return self._adaptive

    def reset_session(self) -> None:
        self.state[:] = 0.0

    def use_session(self, key: str) -> None:
        self.state = self._sessions.use(key)

    def end_session(self, key: str) -> None:
        self._sessions.end(key)

    def session_state(self, key: str) -> np.ndarray:
        return self._sessions.use(key).copy()

    def set_session_state(self, key: str, state: np.ndarray) -> None:
        self._sessions.use(key)[:] = state

    def health(self) -> dict[str, Any]:
        return dict(IN_PROCESS_HEALTH)

    def close(self) -> None:
        """Nothing to free: the session goes with the object."""

    def run(self, segments: Sequence[np.ndarray], states: list[np.ndarray], update_session: bool = True) -> dict:
        """One graph call on segments of different sessions (`states`, one each, updated in
        place): its outputs by name, batch first."""
        n = np.array([len(s) for s in segments], dtype=np.int64)
        samples = np.zeros((len(segments), int(n.max())), dtype=np.float32)
        for i, s in enumerate(segments):
            samples[i, : len(s)] = s
        feed: dict[str, Any] = {"samples": samples, "lengths": n}
        if self._adaptive:
            feed["session"] = np.stack(states)
            feed["update"] = np.full(len(segments), update_session)
        out = dict(zip(self._outputs, self.session.run(self._outputs, feed)))
        if self._adaptive and update_session:
            for state, new in zip(states, out["session_out"]):
                state[:] = new
        return out

    def calls(self, sizes: Sequence[int], keys: Sequence[str | None]) -> list[list[int]]:
        """Which segments share a graph call, in the order the calls run. A session's segments
        go in order, one per call (each one folds into the statistics the next one reads);
        segments of similar length share a call, within max_batch_s of padded audio; an
        export whose results could depend on its batch-mates runs every segment alone."""
        if not self.batches:
            return [[i] for i in range(len(sizes))]
        waves: list[list[int]] = []  # wave k: each session's k-th segment (one wave if nothing adapts)
        seen: dict[str | None, int] = {}
        for i, key in enumerate(keys):
            k = seen.get(key, -1) + 1 if self._adaptive else 0
            seen[key] = k
            if k == len(waves):
                waves.append([])
            waves[k].append(i)
        out = []
        for wave in waves:
            plan = plan_batches([sizes[i] for i in wave], True, self.max_batch_samples)
            out += [[wave[j] for j in call] for call in plan]
        return out

    def predict(
        self, segments: Sequence[np.ndarray], update_session: bool = True, sessions: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Emotion shares for each segment, in order: segments of different sessions (`sessions`,
        one key each; None: the current session) share graph calls, a session's own run in
        its timeline's order."""
        for i, s in enumerate(segments):
            check_segment(i, s)
            if len(s) > MAX_SAMPLES:
                raise ValueError(
                    f"Segment {i} lasts {len(s) / SAMPLE_RATE:.1f} s; the Whisper encoder takes at most 30 s "
                    "(set [vad] max_segment_s lower)."
                )
        check_sessions(segments, sessions)
        keys = list(sessions) if sessions is not None else [None] * len(segments)
        states = [self.state if k is None else self._sessions.use(k) for k in keys]
        results: list[Prediction | None] = [None] * len(segments)
        for call in self.calls([len(s) for s in segments], keys):
            t0 = time.perf_counter()
            out = self.run([segments[i] for i in call], [states[i] for i in call], update_session)
            ms = (time.perf_counter() - t0) * 1e3
            attn = out.get("attention")
            for j, i in enumerate(call):
                pooled = max(1, encoder_frames(len(segments[i])) // self._stride)
                results[i] = Prediction(
                    shares={e: float(v) for e, v in zip(self.emotions, out["shares"][j])},
                    attention=None if attn is None else np.asarray(attn[j, :, :pooled], dtype=np.float32),
                    attention_hop_s=self.attention_hop_s,
                    duration_s=len(segments[i]) / SAMPLE_RATE,
                    encoder_ms=ms,  # the whole graph: encoder and head run as one call
                    regressor_ms=0.0,
                    batch_size=len(call),
                )
        return results  # type: ignore[return-value]
