"""Predictor: speech segments (float32 mono 16 kHz) in, emotion shares per segment out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import MIN_SEGMENT_S, MIN_SEGMENT_SAMPLES, SAMPLE_RATE
from .bundle import DEFAULT_BUNDLE, Bundle, load_bundle
from .compute import Encoder, resolve_device
from .encoder import load_encoder
from .errors import BundleError
from .interface import IN_PROCESS_HEALTH
from .normalize import FeatureNorm

if TYPE_CHECKING:
    import torch


MAX_SESSIONS = 1024  # per-stream normalisation states kept by use_session


@dataclass
class Prediction:
    """One segment's result."""

    shares: dict[str, float]  # emotion -> predicted share of listeners in [0, 1], in bundle order
    attention: np.ndarray | None  # (M, T') Architecture-2 weights over the segment; rows sum to 1
    attention_hop_s: float  # seconds between attention frames (2 encoder frames)
    duration_s: float
    encoder_ms: float  # wall time of the encoder call this segment was part of
    regressor_ms: float  # wall time of the regressor call this segment was part of
    batch_size: int  # segments in those calls

    @property
    def top_emotion(self) -> str:
        return max(self.shares, key=self.shares.__getitem__)


class SessionStates:
    """Each session's state by key (a new key gets `new()`), the MAX_SESSIONS most recently
    used kept."""

    def __init__(self, new) -> None:
        self.new, self.states = new, {}  # key -> state, least recently used first

    def use(self, key: str):
        state = self.states.pop(key, None)
        self.states[key] = state = self.new() if state is None else state
        while len(self.states) > MAX_SESSIONS:
            self.states.pop(next(iter(self.states)))
        return state

    def end(self, key: str) -> None:
        self.states.pop(key, None)


class Predictor:
    """An encoder plus a bundle's regressor bank on one device: the torch Engine
    (model/interface.py)."""

    def __init__(self, bundle: Bundle, encoder: Encoder, device: str = "auto") -> None:
        import torch

        if encoder.dim != bundle.input_dim:
            raise BundleError(
                f"The bundle's regressors take {bundle.input_dim}-dimensional features, but encoder "
                f"'{encoder.spec.name}' gives {encoder.dim}."
            )
        digest = getattr(encoder, "digest", "")
        if bundle.encoder_digest and digest and digest != bundle.encoder_digest:
            raise BundleError(
                f"The bundle was trained on encoder weights {bundle.encoder_digest[:16]}..., but "
                f"'{encoder.spec.name}' loaded weights {digest[:16]}...: refusing to score with other weights."
            )
        self.bundle, self.encoder = bundle, encoder
        self.device = resolve_device(device)
        self.emotions = bundle.emotions
        self.name = "bundle"  # the bundle folder's name once loaded by from_bundle
        self.bank = bundle.bank.to(self.device).eval()
        self.temperature = bundle.temperature  # calibration of softmax shares (model.regressor.temper)
        self.norm = self._new_norm()
        self._sessions = SessionStates(self._new_norm)
        self._torch = torch

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        encoder_name: str | None = None,
    ) -> Predictor:
        """Load a bundle (default: the bundled default model) and its encoder.
        `encoder_name` points an SSL bundle at a local copy."""
        from dataclasses import replace

        folder = Path(DEFAULT_BUNDLE if path is None else path)
        bundle = load_bundle(folder)
        spec = bundle.encoder if encoder_name is None else replace(bundle.encoder, name=encoder_name)
        predictor = cls(bundle, load_encoder(spec, device, dtype, adapter=bundle.adapter), device)
        predictor.name = folder.resolve().name
        return predictor

    def describe(self) -> dict[str, str]:
        """What runs, for the dashboard's header and -v (model/interface.py: Engine.describe)."""
        return {
            "model": self.name,
            "encoder": self.encoder.spec.name,
            "adapter": self.bundle.adapter.describe() if self.bundle.adapter else "",
            "emotions": f"{len(self.emotions)} emotions",
            "device": str(self.device),
            "dtype": getattr(self.encoder, "compute", "float32"),
        }

    def _new_norm(self) -> FeatureNorm:
        b = self.bundle
        return FeatureNorm(b.norm_mean, b.norm_std, b.norm_mode, b.norm_prior_frames, b.norm_session_frames)

    @property
    def adapts(self) -> bool:
        """Whether results depend on the session ("speaker"-mode normalisation): then segments
        of different sessions must not share a call."""
        return self.norm.mode != "global"

    def reset_session(self) -> None:
        """A new speaker or session: "speaker"-mode normalisation starts again from the prior."""
        self.norm.reset()

    def use_session(self, key: str) -> None:
        """Make `key`'s session current (its own normalisation statistics; a new key starts
        from the prior), so that several streams adapt separately. The MAX_SESSIONS most
        recently used are kept."""
        self.norm = self._sessions.use(key)

    def end_session(self, key: str) -> None:
        """Forget `key`'s statistics (its stream closed)."""
        self._sessions.end(key)

    def session_state(self, key: str) -> np.ndarray:
        """`key`'s statistics as (3, D) float64 (normalize.py: FeatureNorm.state), so that a
        stream scored in pieces can go on in another process."""
        return self._sessions.use(key).state().numpy()

    def set_session_state(self, key: str, state: np.ndarray) -> None:
        self._sessions.use(key).set_state(state)

    def sessions(self) -> dict[str, np.ndarray]:
        """Every kept session's statistics by key (to carry them to another engine)."""
        return {k: norm.state().numpy() for k, norm in self._sessions.states.items()}

    def regress(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        update_session: bool = True,
        sessions: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder features (B, T, D) or (B, K, T, D) -> calibrated shares (B, E), attention
        (B, M, T'); segment i normalised in session `sessions[i]` (None: all in the current one)."""
        from .regressor import temper

        torch = self._torch
        features, lengths = features.to(self.device), lengths.to(self.device)
        if sessions is None or not self.adapts:
            x = self.norm(features, lengths, update=update_session)
        else:  # each in its own session, in order: a session's segments fold in one after another
            x = torch.cat([self._sessions.use(k)(features[i : i + 1], lengths[i : i + 1], update=update_session)
                           for i, k in enumerate(sessions)])  # fmt: skip
        with torch.inference_mode():
            shares, attn = self.bank(x, lengths)
            return temper(shares, self.temperature), attn

    def predict(
        self, segments: Sequence[np.ndarray], update_session: bool = True, sessions: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Emotion shares for each segment, batched where that gives the lone result; segment
        i in session `sessions[i]` (None: the current session). `update_session=False`
        (interim results) leaves a speaker-adaptive bundle's session statistics as they were."""
        if not segments:
            return []
        for i, s in enumerate(segments):
            check_segment(i, s)
        check_sessions(segments, sessions)
        t0 = time.perf_counter()
        emb = self.encoder.encode(segments)
        self._sync()
        t1 = time.perf_counter()
        shares, attn = self.regress(emb.features, emb.lengths, update_session, sessions)
        # Shares are proportions of listeners: a linear output head can stray past [0, 1].
        shares = np.clip(shares.float().cpu().numpy(), 0.0, 1.0)
        attn = None if attn is None else attn.float().cpu()
        t2 = time.perf_counter()
        stride = self.bank.spec.attention_stride
        pooled = (emb.lengths // stride).clamp(min=1).cpu()
        out = []
        for i, s in enumerate(segments):
            out.append(
                Prediction(
                    shares={e: float(v) for e, v in zip(self.emotions, shares[i])},
                    attention=None if attn is None else attn[i, :, : int(pooled[i])].numpy(),
                    attention_hop_s=stride * emb.frame_hop_s,
                    duration_s=len(s) / SAMPLE_RATE,
                    encoder_ms=(t1 - t0) * 1e3,
                    regressor_ms=(t2 - t1) * 1e3,
                    batch_size=len(segments),
                )
            )
        return out

    def health(self) -> dict[str, Any]:
        return dict(IN_PROCESS_HEALTH)

    def close(self) -> None:
        """Nothing to free: the weights go with the object."""

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)


def check_segment(i: int, s: np.ndarray) -> None:
    a = np.asarray(s)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"Segment {i} must be a 1-D float array of 16 kHz mono samples, not {a.dtype} with shape {a.shape}."
        )
    if len(a) < MIN_SEGMENT_SAMPLES:
        raise ValueError(f"Segment {i} lasts {len(a) / SAMPLE_RATE:.3f} s; the model needs at least {MIN_SEGMENT_S} s.")
    if not np.isfinite(a).all():
        raise ValueError(f"Segment {i} contains NaN or infinite samples.")


def check_sessions(segments: Sequence[np.ndarray], sessions: Sequence[str] | None) -> None:
    if sessions is not None and len(sessions) != len(segments):
        raise ValueError(f"{len(segments)} segments came with {len(sessions)} session keys.")
