"""The model in a process of its own, for `emomon serve`, and the supervisor that keeps one running.

One Python interpreter runs one thread at a time (the GIL). In the server, the event loop
(every stream's WebSocket, resampler and VAD) and the model's Python work (openSMILE's
wrapper, torch's dispatch) would take turns on one core, and latency grows with the
streams long before the cores are busy (docs/architecture.md, "Measurements behind the code"). `ModelProcess` runs the
Predictor in a child process and stands in for it in the inference worker: the worker
thread waits on a pipe (without the GIL) while the child computes on another core.

Supervision (as gunicorn's arbiter or Erlang's "let it crash"): a watcher thread waits on
the child. When it dies (the out-of-memory killer, a crash in native code), the call in
flight raises `ModelProcessDied` at once, so its segments get error results naming the
cause; a new child starts, and calls wait for it (bounded). While there is none, `health()`
says so. A child that does not answer a call within `call_timeout_s` is killed and
replaced the same way. `max_restarts` deaths within `window_s` seconds is a crash loop:
every call then raises `ModelUnavailable` and `on_fatal` is told, once, in one sentence.
A new child starts with fresh normalisation sessions: what the old one had adapted to
each stream is lost with it.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

import numpy as np

from ...model.errors import EmomonError
from ...model.memory import spawning_scorers

if TYPE_CHECKING:
    from ...model.predictor import Prediction

log = logging.getLogger("emomon")


class ModelProcessDied(EmomonError):
    """The model process died or stopped answering during a call; a new one is starting."""


class ModelUnavailable(EmomonError):
    """The model process keeps dying (a crash loop): no new one is started."""


CALLS = ("predict", "use_session", "end_session", "session_state", "set_session_state")  # Engine's, over the pipe


def _child(conn, path: str, device: str, dtype: str, encoder_name: str | None, engine: str, threads: int) -> None:
    from ...model.engines import open_predictor

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops the child
    try:
        if threads:  # this process's share of the cores (serve --workers)
            import torch

            torch.set_num_threads(threads)
        predictor = open_predictor(path, device, dtype, engine, encoder_name, threads or None)
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
            if method not in CALLS:
                raise ValueError(f"The model process has no call '{method}'.")
            conn.send(("ok", getattr(predictor, method)(*args)))
        except Exception as e:  # noqa: BLE001 - the worker turns it into error rows
            conn.send(("error", str(e)))


def exit_code(proc, timeout_s: float) -> int | None:
    """The child's exit code, waiting up to `timeout_s` for it. Two threads may wait on one
    child (a call and the supervisor): the one whose waitpid loses the race reads None for a
    moment, until the other records the code on the shared Popen, so this reads it again."""
    deadline = time.monotonic() + timeout_s
    proc.join(timeout_s)
    while proc.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc.exitcode


def how_it_ended(exitcode: int | None) -> str:
    """A child's end in words: 'killed by SIGKILL', 'exit code 1'."""
    if exitcode is None:
        return "its exit status is unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class ModelProcess:
    """An engine (a Predictor or an OnnxPredictor) in a supervised child process: an Engine
    itself (model/interface.py), each call sent over a pipe."""

    def __init__(
        self,
        path: str,
        device: str = "auto",
        dtype: str = "auto",
        encoder_name: str | None = None,
        engine: str = "torch",
        call_timeout_s: float = 120.0,
        start_timeout_s: float = 300.0,
        max_restarts: int = 5,
        window_s: float = 60.0,
        on_fatal: Callable[[str], None] | None = None,
        threads: int = 0,
    ) -> None:
        """`threads`: the engine's threads in the child (0: its default, every core)."""
        self._args = (str(path), device, dtype, encoder_name, engine, threads)
        self.call_timeout_s, self.start_timeout_s = call_timeout_s, start_timeout_s
        self.max_restarts, self.window_s, self.on_fatal = max_restarts, window_s, on_fatal
        self._ctx = mp.get_context("spawn")  # no fork of a process that has threads and torch
        self._lock = threading.Lock()  # one call on the pipe at a time
        self._state = threading.Condition()  # guards the fields below; notified when a child is ready or lost
        self._proc, self._conn, info = self._start()  # a model that cannot load: one sentence, here
        self.up, self.restarts, self.fatal, self._stopping = True, 0, "", False
        self._deaths: collections.deque[float] = collections.deque()
        self._ended: list[str] = []
        self.emotions: tuple[str, ...] = info["emotions"]
        self.name: str = info["name"]
        self.adapts: bool = info["adapts"]
        self._describe: dict[str, str] = info["describe"]
        self._watcher = threading.Thread(target=self._supervise, name="emomon-model-supervisor", daemon=True)
        self._watcher.start()

    # -- the child ---------------------------------------------------------------------
    def _start(self):
        """A new child with the model loaded: (process, pipe, what it said when ready)."""
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child, args=(child, *self._args), daemon=True, name="emomon-model")
        with spawning_scorers():
            proc.start()
        child.close()
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not parent.poll(0.2):
                if not proc.is_alive():
                    raise EOFError
                if time.monotonic() > deadline:
                    proc.kill()
                    raise EmomonError(f"The model process did not load the model within {self.start_timeout_s:g} s.")
            status, info = parent.recv()
        except (EOFError, OSError):
            raise EmomonError(
                f"The model process ended while loading the model ({how_it_ended(exit_code(proc, 5))})."
            ) from None
        if status != "ready":
            proc.join(5)
            raise EmomonError(info)
        return proc, parent, info

    def _supervise(self) -> None:
        """Wait on the child; when it ends unasked, start another, unless it keeps dying."""
        while True:
            with self._state:
                proc, stopping = self._proc, self._stopping
            if stopping:
                return
            wait([proc.sentinel], timeout=0.5)
            if proc.is_alive():
                continue
            with self._state:
                if self._stopping:
                    return
                self.up = False
                self._state.notify_all()
            why = how_it_ended(exit_code(proc, 2))
            log.warning("The model process died (%s); starting a new one.", why)
            while True:
                now = time.monotonic()
                self._deaths.append(now)
                while self._deaths and self._deaths[0] < now - self.window_s:
                    self._deaths.popleft()
                if len(self._deaths) >= self.max_restarts:
                    self._give_up(f"The model process died {len(self._deaths)} times within {self.window_s:g} s "
                                  f"(last: {why}); no new one is started.")  # fmt: skip
                    return
                try:
                    new_proc, conn, _ = self._start()
                    break
                except EmomonError as e:
                    why = str(e)
                    log.warning("A new model process failed to start: %s", why)
            with self._state:
                if self._stopping:
                    new_proc.kill()
                    return
                old = self._conn
                self._proc, self._conn, self.up = new_proc, conn, True
                self.restarts += 1
                self._state.notify_all()
            old.close()
            log.warning("A new model process is ready (restart %d); streams go on.", self.restarts)

    def _give_up(self, sentence: str) -> None:
        with self._state:
            self.fatal = sentence
            self._state.notify_all()
        log.error("%s", sentence)
        if self.on_fatal is not None:
            self.on_fatal(sentence)

    # -- calls -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Whether a model process is ready, and how often one was restarted."""
        with self._state:
            return {"up": self.up and not self.fatal, "restarts": self.restarts, "fatal": self.fatal}

    def describe(self) -> dict[str, str]:
        return dict(self._describe, device=self._describe["device"] + " (model process)")

    def _ready(self):
        """The current child and its pipe, waiting (bounded) while a new one starts."""
        with self._state:
            self._state.wait_for(lambda: self.up or self.fatal or self._stopping, timeout=self.start_timeout_s)
            if self.fatal:
                raise ModelUnavailable(self.fatal)
            if not self.up or self._stopping:
                raise ModelProcessDied("No model process is ready: a new one is still starting.")
            return self._proc, self._conn

    def _exchange(self, proc, conn, message: tuple) -> tuple[str, Any]:
        """Send one request and wait for its answer while the child lives, at most call_timeout_s."""
        conn.send(message)
        deadline = time.monotonic() + self.call_timeout_s
        while not conn.poll(0.1):
            if not proc.is_alive():
                raise EOFError
            if time.monotonic() > deadline:
                self._lost(proc)
                proc.kill()  # the supervisor starts another
                raise ModelProcessDied(
                    f"The model process did not answer within {self.call_timeout_s:g} s; it was stopped and a new "
                    "one is starting."
                )
        return conn.recv()

    def _lost(self, proc) -> None:
        """A call found `proc` dead or stuck: the next call waits for the supervisor's new one."""
        with self._state:
            if self._proc is proc:
                self.up = False

    def _call(self, method: str, *args: Any) -> Any:
        proc, conn = self._ready()
        with self._lock:
            try:
                while self._ended:  # sessions of closed streams, forgotten on the way
                    self._exchange(proc, conn, ("end_session", (self._ended.pop(),)))
                status, value = self._exchange(proc, conn, (method, args))
            except (EOFError, OSError):
                self._lost(proc)
                raise ModelProcessDied(
                    f"The model process died ({how_it_ended(exit_code(proc, 2))}); a new one is starting."
                ) from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def predict(
        self, segments: Sequence[np.ndarray], update_session: bool = True, sessions: Sequence[str] | None = None
    ) -> list[Prediction]:
        return self._call("predict", [np.asarray(s, np.float32) for s in segments], update_session,
                          None if sessions is None else list(sessions))  # fmt: skip

    def use_session(self, key: str) -> None:
        self._call("use_session", key)

    def session_state(self, key: str) -> np.ndarray:
        return self._call("session_state", key)

    def set_session_state(self, key: str, state: np.ndarray) -> None:
        self._call("set_session_state", key, np.asarray(state, np.float64))

    def end_session(self, key: str) -> None:
        """Called from the event loop: never waits for the model, goes with the next call."""
        self._ended.append(key)

    def close(self) -> None:
        with self._state:
            self._stopping = True
            proc, conn = self._proc, self._conn
            self._state.notify_all()
        if proc.is_alive():
            try:
                with self._lock:
                    conn.send(("stop", ()))
            except (BrokenPipeError, OSError):
                pass
            proc.join(10)
        if proc.is_alive():
            proc.kill()
        self._watcher.join(5)
