"""Input normalisation of encoder features, fixed or adapting to the speaker.

- "global" (the paper): standardise each feature dimension with the training set's mean
  and standard deviation.
- "speaker": standardise with the statistics of the audio heard so far in this session,
  starting from the training statistics as a prior worth `prior_frames` frames. Models
  trained this way saw each training speaker standardised by that speaker's own
  statistics, which removes much of what differs between voices (pitch range, loudness,
  microphone) and keeps what differs between emotions. In a live session the running
  statistics converge to the current speaker's; call `reset()` when the speaker changes.
"""

from __future__ import annotations

from typing import Literal

import torch

NormMode = Literal["global", "speaker"]


class FeatureNorm:
    def __init__(self, mean: list[float], std: list[float], mode: NormMode = "global", prior_frames: int = 3000):
        self.mode = mode
        self.prior_mean = torch.tensor(mean, dtype=torch.float64)  # (D,)
        self.prior_var = torch.tensor(std, dtype=torch.float64) ** 2
        self.prior_frames = prior_frames
        self.reset()

    def reset(self) -> None:
        """Forget the session: back to the training statistics."""
        self.n = float(self.prior_frames)
        self.mean = self.prior_mean.clone()
        self.m2 = self.prior_var * self.n  # sum of squared deviations (Chan et al.'s merge)

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / self.n).sqrt().clamp(min=1e-5)

    def update(self, frames: torch.Tensor) -> None:
        """Fold frames (N, D) into the running statistics (exact parallel-variance merge)."""
        x = frames.detach().to("cpu", torch.float64)
        k = x.shape[0]
        if k == 0:
            return
        m_b = x.mean(0)
        m2_b = ((x - m_b) ** 2).sum(0)
        delta = m_b - self.mean
        total = self.n + k
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * k / total)
        self.n = total

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Standardise (B, T, D) or (B, K, T, D) features; padded frames stay exactly zero.

        In "speaker" mode segment i is folded into the statistics and then standardised
        with them, in batch order, so a batch gives what the same segments give one by one.
        """
        T = features.shape[-2]
        valid = torch.arange(T, device=features.device)[:, None] < lengths[:, None, None]  # (B, T, 1)
        if features.dim() == 4:
            valid = valid[:, None]  # (B, 1, T, 1)
        if self.mode == "global":
            return (features - self._mean_like(features)) / self._std_like(features) * valid
        D = features.shape[-1]
        out = torch.empty_like(features)
        for i in range(features.shape[0]):  # the session's timeline: order matters
            self.update(features[i, ..., : int(lengths[i]), :].reshape(-1, D))
            out[i] = (features[i] - self._mean_like(features)) / self._std_like(features)
        return out * valid

    def _mean_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean.to(x.device, x.dtype)

    def _std_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.std.to(x.device, x.dtype)


def feature_stats(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every real frame of (T, D) or (K, T, D) features."""
    D = features[0].shape[-1]
    frames = torch.cat([f.reshape(-1, D) for f in features])  # (frames, D)
    return frames.mean(0), frames.std(0, correction=0).clamp(min=1e-5)


def per_speaker_standardise(features: list[torch.Tensor], speakers: list[str]) -> list[torch.Tensor]:
    """Training-side counterpart of "speaker" mode: each speaker's features standardised by
    that speaker's own statistics over all of their frames."""
    out: list[torch.Tensor | None] = [None] * len(features)
    for s in sorted(set(speakers)):
        idx = [i for i, sp in enumerate(speakers) if sp == s]
        mean, std = feature_stats([features[i] for i in idx])
        for i in idx:
            out[i] = (features[i] - mean) / std
    return out  # type: ignore[return-value]
