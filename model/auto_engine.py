"""`engine = "auto"` without the wait: torch scores while the ONNX export is made elsewhere.

Choosing between the engines needs the bundle's ONNX export, which takes half a minute
or more to make. Where it is not in the cache yet, `AutoEngine` starts the torch engine
at once and a detached, low-priority process (`python -m emomon.model.auto_engine`) that
exports the bundle into the cache; a run that ends first leaves it to finish, and the
next run finds the export there. While this run goes on, each call first looks whether
the export has appeared: then both engines score a 2 s segment a few times (`measure`),
the choice is recorded, and the faster one scores from the next call on, with every
session's normalisation statistics carried over (the same (3, D) state in both engines).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .onnx_engine import CacheEntry
    from .predictor import Prediction

log = logging.getLogger("emomon")


def start_export(entry: CacheEntry, folder: Path, precision: str) -> None:
    """Start the detached exporter, unless one holds the cache entry's lock already."""
    from .files import try_lock

    fd = try_lock(entry.lock)
    if fd is None:
        return  # another process is exporting it
    os.close(fd)
    subprocess.Popen(
        [sys.executable, "-m", "emomon.model.auto_engine", str(folder), precision],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives this run; Ctrl-C here does not reach it
    )  # fmt: skip


class AutoEngine:
    """The torch engine until the export is there and measured, then the faster engine: an
    Engine itself (model/interface.py)."""

    def __init__(self, torch_engine, folder: Path, device: str, dtype: str, threads: int | None) -> None:
        from .onnx_engine import CacheEntry, onnx_precision

        self.current = torch_engine
        self.folder, self.device, self.dtype, self.threads = folder, device, dtype, threads
        precision = onnx_precision(dtype, device)
        self.entry = CacheEntry.of(folder, precision)  # found once: each call only looks for the file
        self.why = "auto: torch while the ONNX export is made in the background"
        self.settled = False
        start_export(self.entry, folder, precision)

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def emotions(self) -> tuple[str, ...]:
        return self.current.emotions

    @property
    def adapts(self) -> bool:
        return self.current.adapts

    def describe(self) -> dict[str, str]:
        return self.current.describe()

    def _settle(self) -> None:
        """Once the export is in the cache: measure, record, and switch if ONNX is faster."""
        if self.settled or not self.entry.ready():
            return
        self.settled = True
        try:
            onnx, self.why = measure(self.folder, self.device, self.dtype, self.threads, self.current)
        except Exception as e:  # noqa: BLE001 - a failed export or measurement keeps torch, said once
            log.warning("engine auto: the ONNX engine could not be measured (%s); torch goes on.", e)
            return
        if onnx is None:
            log.info("engine torch (%s)", self.why)
            return
        carry_sessions(self.current, onnx)
        self.current = onnx
        log.info("engine onnx from now on (%s)", self.why)

    def predict(
        self, segments: Sequence[np.ndarray], update_session: bool = True, sessions: Sequence[str] | None = None
    ) -> list[Prediction]:
        self._settle()
        return self.current.predict(segments, update_session, sessions)

    def use_session(self, key: str) -> None:
        self.current.use_session(key)

    def end_session(self, key: str) -> None:
        self.current.end_session(key)

    def session_state(self, key: str) -> np.ndarray:
        return self.current.session_state(key)

    def set_session_state(self, key: str, state: np.ndarray) -> None:
        self.current.set_session_state(key, state)

    def reset_session(self) -> None:
        self.current.reset_session()

    def health(self) -> dict[str, Any]:
        return self.current.health()

    def close(self) -> None:
        self.current.close()


def _record(folder: Path, dtype: str) -> Path:
    """Where auto keeps its measurement for this bundle, CPU and dtype. Not per thread count:
    every command on the machine (replay, batch's one-thread workers, serve) then runs the
    same engine and gives the same shares; it is measured at the first caller's threads."""
    import hashlib

    from .compute import cpu_name
    from .export import bundle_digest, cache_dir

    key = hashlib.sha256(f"{bundle_digest(folder)} {cpu_name()} {dtype}".encode()).hexdigest()[:24]
    return cache_dir() / f"auto-{key}.json"


def measured(folder: Path, dtype: str) -> tuple[str, str] | None:
    """The engine auto chose here before, and why; None when it has not measured yet."""
    import json

    try:
        seen = json.loads(_record(folder, dtype).read_text())
        if seen["engine"] in ("torch", "onnx"):
            return seen["engine"], _why(seen["torch_ms"], seen["onnx_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def measure(folder: Path, device: str, dtype: str, threads: int | None, torch_engine):
    """Time the torch engine and the (cached) ONNX export on a 2 s segment, record which is
    faster, and return the ONNX engine if it is (else None), with why. One process measures
    at a time (a lock per record): one that waited reads what the first chose, so that the
    workers of one run (batch's, serve's) all take the same engine."""
    import torch

    from .files import exclusive
    from .onnx_engine import OnnxPredictor

    threads = threads or torch.get_num_threads()
    record = _record(folder, dtype)
    with exclusive(record.with_suffix(".lock"), "The engine measurement"):
        seen = measured(folder, dtype)
        if seen is None:
            return _time_both(folder, device, dtype, threads, torch_engine, record)
    chosen, why = seen
    return (OnnxPredictor.from_bundle(folder, device, dtype, threads) if chosen == "onnx" else None), why


def _time_both(folder: Path, device: str, dtype: str, threads: int, torch_engine, record: Path):
    """The median of five calls of each engine on a 2 s segment, after a warm-up; the faster
    one goes into `record`."""
    import json
    import statistics
    import time

    import numpy as np

    from .compute import cpu_name
    from .files import write_atomic
    from .onnx_engine import OnnxPredictor

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
    write_atomic(record, (json.dumps(seen) + "\n").encode())
    return (engines["onnx"] if chosen == "onnx" else None), _why(ms["torch"], ms["onnx"])


def _why(torch_ms: float, onnx_ms: float) -> str:
    return f"auto: measured faster here ({torch_ms:.1f} ms torch, {onnx_ms:.1f} ms onnx)"


def carry_sessions(torch_engine, onnx_engine) -> None:
    """Every session's statistics, and the current one's, from the torch engine to the ONNX one."""
    for key, state in torch_engine.sessions().items():
        onnx_engine.set_session_state(key, state)
    onnx_engine.state[:] = torch_engine.norm.state().numpy()


def main(argv: list[str]) -> int:
    """The detached exporter: the bundle's export in one precision into the cache, at low priority."""
    os.nice(10)
    import torch

    from .onnx_engine import cached_export

    torch.set_num_threads(1)
    cached_export(Path(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
