"""Input normalisation of encoder features, fixed or adapting to the speaker.

- "global" (the paper): standardise each feature dimension with the training set's mean
  and standard deviation.
- "speaker": standardise with the statistics of the audio heard so far in this session,
  starting from the training statistics as a prior worth `prior_frames` frames; with
  `session_frames` the session never weighs more than that many frames, so the prior
  keeps a share of the weight however long the session runs. Models
  trained this way saw each training speaker standardised by that speaker's own
  statistics, which removes much of what differs between voices (pitch range, loudness,
  microphone) and keeps what differs between emotions. In a live session the running
  statistics converge to the current speaker's; call `reset()` when the speaker changes.
  Its trap: a speaker who stays angry for minutes makes anger their own average, so it
  drifts towards "neutral" (measured in docs/training.md); the cap limits that drift.
"""

from __future__ import annotations

from typing import Literal

import torch

NormMode = Literal["global", "speaker", "corpus"]
ADAPTIVE = ("speaker", "corpus")  # modes whose statistics follow the session


class FeatureNorm:
    def __init__(
        self,
        mean: list[float],
        std: list[float],
        mode: NormMode = "global",
        prior_frames: int = 3000,
        session_frames: int = 0,
    ):
        self.mode = mode
        self.prior_mean = torch.tensor(mean, dtype=torch.float64)  # (D,)
        self.prior_var = torch.tensor(std, dtype=torch.float64) ** 2
        self.prior_frames = prior_frames
        self.session_frames = session_frames  # cap on the session's weight; 0 = none
        self.reset()

    def reset(self) -> None:
        """Forget the session: back to the training statistics."""
        self.n_session = 0.0
        self.session_mean = torch.zeros_like(self.prior_mean)
        self.session_m2 = torch.zeros_like(self.prior_var)  # sum of squared deviations

    def update(self, frames: torch.Tensor) -> None:
        """Fold frames (N, D) into the session's statistics (exact parallel-variance merge)."""
        x = frames.detach().to("cpu", torch.float64)
        if x.shape[0] == 0:
            return
        self.n_session, self.session_mean, self.session_m2 = _merge(
            self.n_session, self.session_mean, self.session_m2, x.shape[0], x.mean(0), ((x - x.mean(0)) ** 2).sum(0)
        )

    def state(self) -> torch.Tensor:
        """The session's statistics as (3, D) float64: the frame count in every column, the
        mean, the sum of squared deviations (the ONNX export's session state, the same layout)."""
        return torch.stack([torch.full_like(self.session_mean, self.n_session), self.session_mean, self.session_m2])

    def set_state(self, state) -> None:
        """Take up a session from `state()` (of this process or another)."""
        x = torch.as_tensor(state, dtype=torch.float64)
        self.n_session, self.session_mean, self.session_m2 = float(x[0, 0]), x[1].clone(), x[2].clone()

    @property
    def mean(self) -> torch.Tensor:
        return self._combined()[0]

    @property
    def std(self) -> torch.Tensor:
        return self._combined()[1]

    def _combined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior worth prior_frames merged with the session, which weighs at most session_frames."""
        w = self.n_session if not self.session_frames else min(self.n_session, float(self.session_frames))
        scale = w / self.n_session if self.n_session else 0.0
        n, mean, m2 = _merge(
            float(self.prior_frames), self.prior_mean, self.prior_var * self.prior_frames,
            w, self.session_mean, self.session_m2 * scale,
        )  # fmt: skip
        if n == 0:
            return self.prior_mean, self.prior_var.sqrt().clamp(min=1e-5)
        return mean, (m2 / n).sqrt().clamp(min=1e-5)

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Standardise (B, T, D) or (B, K, T, D) features; padded frames stay exactly zero.

        In the adaptive modes segment i is folded into the statistics and then standardised
        with them, in batch order, so a batch gives what the same segments give one by one.
        `update=False` standardises with the statistics as they are and leaves them so.
        """
        T = features.shape[-2]
        valid = torch.arange(T, device=features.device)[:, None] < lengths[:, None, None]  # (B, T, 1)
        if features.dim() == 4:
            valid = valid[:, None]  # (B, 1, T, 1)
        if self.mode not in ADAPTIVE or not update:
            return self._standardise(features) * valid
        D = features.shape[-1]
        out = torch.empty_like(features)
        for i in range(features.shape[0]):  # the session's timeline: order matters
            self.update(features[i, ..., : int(lengths[i]), :].reshape(-1, D))
            out[i] = self._standardise(features[i])
        return out * valid

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._combined()
        return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)


def _merge(n_a: float, mean_a, m2_a, n_b: float, mean_b, m2_b):
    """Chan et al.'s merge of two (count, mean, sum of squared deviations) summaries."""
    total = n_a + n_b
    if total == 0:
        return 0.0, mean_a, m2_a
    delta = mean_b - mean_a
    return total, mean_a + delta * (n_b / total), m2_a + m2_b + delta**2 * (n_a * n_b / total)


def feature_stats(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every real frame of (T, D) or (K, T, D) features."""
    D = features[0].shape[-1]
    frames = torch.cat([f.reshape(-1, D) for f in features])  # (frames, D)
    return frames.mean(0), frames.std(0, correction=0).clamp(min=1e-5)


def frame_sums(features: torch.Tensor) -> torch.Tensor:
    """(T, D) features -> (3, D) float64: the frame count, the sum and the sum of squares
    over frames; summed over files they give feature_stats() without the frames."""
    x = features.to(torch.float64)
    return torch.stack([torch.full_like(x[0], x.shape[0]), x.sum(0), (x * x).sum(0)])


def stats_from_sums(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """feature_stats() from frame_sums() of each file, stacked (N, 3, D)."""
    n, total, squares = sums.sum(0)
    mean = total / n
    var = (squares / n - mean**2).clamp(min=0.0)
    return mean.float(), var.sqrt().clamp(min=1e-5).float()


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


def session_stats(
    sums: torch.Tensor, prior_mean: torch.Tensor, prior_var: torch.Tensor, prior_frames: int, session_frames: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) each clip of one session is standardised with, FeatureNorm's way:
    sums (N, 3, D) frame_sums of the session's clips in order -> mean, std (N, D) float32.
    Clip i is folded into the session first, then standardised (FeatureNorm.__call__)."""
    count, total, squares = sums.to(torch.float64).cumsum(0).unbind(1)  # each (N, D)
    mean_s = total / count
    m2_s = (squares - count * mean_s**2).clamp(min=0.0)
    w = count if not session_frames else count.clamp(max=float(session_frames))
    m2_s = m2_s * (w / count)
    n = prior_frames + w
    delta = mean_s - prior_mean.to(torch.float64)
    mean = prior_mean.to(torch.float64) + delta * (w / n)
    m2 = prior_var.to(torch.float64) * prior_frames + m2_s + delta**2 * (prior_frames * w / n)
    return mean.float(), (m2 / n).sqrt().clamp(min=1e-5).float()


def group_standardise_stats(sums: torch.Tensor, groups: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-side "speaker" or "corpus" mode from frame sums: each file's (mean, std)
    (N, D) are its group's own statistics over all of the group's frames."""
    mean = torch.empty(sums.shape[0], sums.shape[-1])
    std = torch.empty_like(mean)
    for g in sorted(set(groups)):
        idx = torch.tensor([i for i, x in enumerate(groups) if x == g])
        mean[idx], std[idx] = stats_from_sums(sums[idx])
    return mean, std
