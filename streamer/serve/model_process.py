"""The model in a process of its own, for `emomon serve`.

One Python interpreter runs one thread at a time (the GIL). In the server, the event loop
(every stream's WebSocket, resampler and VAD) and the model's Python work (openSMILE's
wrapper, torch's dispatch) would take turns on one core, and latency grows with the
streams long before the cores are busy (docs/architecture.md, "Measurements behind the code"). `ModelProcess` runs the
Predictor in a child process and stands in for it in the inference worker: the worker
thread waits on a pipe (without the GIL) while the child computes on another core.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

import numpy as np

from ...model.errors import EmomonError
from ...model.memory import spawning_scorers


def _child(conn, path: str, device: str, dtype: str, encoder_name: str | None, engine: str) -> None:
    from ...model.engines import open_predictor

    try:
        predictor = open_predictor(path, device, dtype, engine, encoder_name)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one sentence
        conn.send(("error", str(e)))
        return
    conn.send(("ready", {"describe": predictor.describe(), "emotions": predictor.emotions,
                         "name": predictor.name, "adapts": predictor.adapts}))  # fmt: skip
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        if method == "stop":
            return
        try:
            conn.send(("ok", getattr(predictor, method)(*args)))
        except Exception as e:  # noqa: BLE001 - the worker turns it into error rows
            conn.send(("error", str(e)))


class ModelProcess:
    """A Predictor in a child process, with the methods the inference worker calls."""

    def __init__(
        self,
        path: str,
        device: str = "auto",
        dtype: str = "auto",
        encoder_name: str | None = None,
        engine: str = "torch",
    ) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process that has threads and torch
        self._conn, child = ctx.Pipe()
        args = (child, str(path), device, dtype, encoder_name, engine)
        self._proc = ctx.Process(target=_child, args=args, daemon=True)
        with spawning_scorers():
            self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self._ended: list[str] = []
        status, info = self._conn.recv()
        if status != "ready":
            self._proc.join(5)
            raise EmomonError(info)
        self.emotions: tuple[str, ...] = info["emotions"]
        self.name: str = info["name"]
        self.adapts: bool = info["adapts"]
        self._describe: dict[str, str] = info["describe"]

    def describe(self) -> dict[str, str]:
        return dict(self._describe, device=self._describe["device"] + " (model process)")

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            while self._ended:  # sessions of closed streams, forgotten on the way
                self._conn.send(("end_session", (self._ended.pop(),)))
                self._conn.recv()
            self._conn.send((method, args))
            status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def predict(self, segments: list[np.ndarray], update_session: bool = True):
        return self._call("predict", [np.asarray(s, np.float32) for s in segments], update_session)

    def use_session(self, key: str) -> None:
        self._call("use_session", key)

    def end_session(self, key: str) -> None:
        """Called from the event loop: never waits for the model, goes with the next call."""
        self._ended.append(key)

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                with self._lock:
                    self._conn.send(("stop", ()))
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
