"""What every engine that scores segments offers: the `Engine` protocol.

Three engines implement it: `Predictor` (torch, model/predictor.py), `OnnxPredictor` (ONNX
Runtime, model/onnx_engine.py) and `ModelProcess` (either of the two in a supervised child
process, streamer/serve/model_process.py); tests' stand-ins implement it too. Callers (the
worker, scoring.score, serve, batch) take an `Engine` and use only these members, so
nothing probes with getattr. tests/test_interface.py checks each engine against it, at
run time and with mypy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from .predictor import Prediction

DESCRIBED = ("model", "encoder", "adapter", "emotions", "device", "dtype")  # the keys of describe()


@runtime_checkable
class Engine(Protocol):
    """A loaded model bundle that turns 16 kHz mono segments into emotion shares."""

    @property
    def name(self) -> str:
        """The bundle's name (its folder's)."""
        ...

    @property
    def emotions(self) -> tuple[str, ...]:
        """The emotions of every Prediction's shares, in order."""
        ...

    @property
    def adapts(self) -> bool:
        """Whether results depend on the session (speaker-adaptive normalisation): then
        each segment goes with its session's key."""
        ...

    def describe(self) -> dict[str, str]:
        """What runs, as display strings under the keys of DESCRIBED: model, encoder,
        adapter ("" when the encoder is not adapted), emotions, device, dtype."""
        ...

    def predict(
        self, segments: Sequence[np.ndarray], update_session: bool = True, sessions: Sequence[str] | None = None
    ) -> list[Prediction]:
        """A Prediction per segment, in order. Segment i belongs to session `sessions[i]`
        (None: all to the current session); segments of different sessions may share a
        model call, a session's own in the order given. `update_session=False` (interim
        results) leaves the sessions' statistics as they were."""
        ...

    def use_session(self, key: str) -> None:
        """Make `key`'s session current (a new key starts from the bundle's prior)."""
        ...

    def end_session(self, key: str) -> None:
        """Forget `key`'s session (its stream closed)."""
        ...

    def session_state(self, key: str) -> np.ndarray:
        """`key`'s statistics as a (3, D) float64 array, so that a stream scored in pieces
        goes on elsewhere (batch's Ray actors)."""
        ...

    def set_session_state(self, key: str, state: np.ndarray) -> None:
        """Continue `key`'s session from `session_state`'s array."""
        ...

    def health(self) -> dict[str, Any]:
        """{"up": bool, "restarts": int, "fatal": str}: an engine in this process is always up."""
        ...

    def close(self) -> None:
        """Free what the engine holds (a child process); in-process engines hold nothing."""
        ...


IN_PROCESS_HEALTH: dict[str, Any] = {"up": True, "restarts": 0, "fatal": ""}
