"""Normalisation units and sessions: a fit on standardised features, and predictions that
adapt to each session as the live monitor does (model/normalize.py)."""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..model.normalize import (
    ADAPTIVE,
    FeatureNorm,
    feature_stats,
    group_standardise_stats,
    per_speaker_standardise,
    session_stats,
    stats_from_sums,
)
from ..model.regressor import normalise_pooled
from .adapt import adapt_fit
from .checkpoints import Checkpoints
from .datasets import Item
from .train import FitResult, Split, fit, predict

if TYPE_CHECKING:
    from ..config import Config  # the whole config.toml, assembled on top
    from .features import Features
    from .progress import TrainingProgress

log = logging.getLogger("emomon")


def norm_units(items: list[Item], mode: str) -> list[str]:
    """What one set of statistics describes: the corpus in "corpus" mode, else the speaker
    (in training, what is standardised by its own statistics; in evaluation, one session)."""
    return [it.corpus if mode == "corpus" else it.speaker for it in items]


def fit_normalised(cfg: Config, emotions, train: tuple[Split, list[str]], devel=None, epochs=None, on_epoch=None):
    """fit() with the configured input normalisation; returns (FitResult, FeatureNorm).

    "speaker" and "corpus": each training (and devel, for model selection) speaker or
    corpus is standardised by its own statistics; the returned FeatureNorm starts from the
    raw training statistics and adapts to whatever it hears, as the Predictor's does.
    Pooled statistics follow any per-dimension standardisation (normalise_pooled), so
    Architecture 3 never needs the frames again.
    """
    mode = cfg.train.normalization
    pooled = train[0].pooled is not None
    # the raw training statistics
    mean, std = stats_from_sums(train[0].sums) if pooled else feature_stats(train[0].features)
    norm = FeatureNorm(mean.tolist(), std.tolist(), mode, cfg.train.prior_frames, cfg.train.session_frames)

    def standardise(features: list[torch.Tensor], units: list[str]) -> list[torch.Tensor]:
        if mode in ADAPTIVE:
            return per_speaker_standardise(features, units)
        return [(f - mean) / std for f in features]

    def prepare(split: Split, units: list[str]) -> Split:
        if pooled:
            m, s = group_standardise_stats(split.sums, units) if mode in ADAPTIVE else (mean, std)
            return replace(split, pooled=normalise_pooled(split.pooled, m, s, cfg.regressor.pooling))
        views = [list(v) for v in zip(*split.views)] if split.views else []  # view k of every file
        views = [standardise(v, units) for v in views]
        return replace(
            split, features=standardise(split.features, units), views=[list(v) for v in zip(*views)] if views else []
        )

    dev = prepare(*devel) if devel is not None else None
    fitted = fit(prepare(*train), dev, emotions, cfg.regressor, cfg.train, epochs, str(training_device(cfg)), on_epoch)
    return fitted, norm


def fit_adapted(
    feats: Features, cfg: Config, train_idx: np.ndarray, devel_idx: np.ndarray | None, warm: FitResult,
    warm_norm: FeatureNorm, name: str, checkpoints: Checkpoints | None, progress: TrainingProgress,
    epochs: int | None = None,
) -> tuple[FitResult, FeatureNorm]:  # fmt: skip
    """The encoder adapted from the frozen fit `warm` on the same files (training/adapt.py);
    returns the fit and its normalisation, whose prior is the adapted frames' statistics."""
    split, units = feats.split(train_idx, augmented=True)
    devel = None
    if devel_idx is not None:
        d_units = norm_units([feats.items[i] for i in devel_idx], cfg.train.normalization)
        devel = ([feats.prefix[i] for i in devel_idx], feats.targets[devel_idx], feats.masks[devel_idx], d_units)
    progress.start_fit(f"{name}, adapting", epochs or cfg.train.adapt_epochs)
    r, sums = adapt_fit(
        [feats.prefix[i] for i in train_idx], [feats.prefix_views[i] for i in train_idx], split, units, devel,
        warm, cfg, name, checkpoints, epochs, progress.epoch,
    )  # fmt: skip
    if sums is None:
        return r, warm_norm
    mean, std = stats_from_sums(sums)
    t = cfg.train
    return r, FeatureNorm(mean.tolist(), std.tolist(), t.normalization, t.prior_frames, t.session_frames)


def session_predict(r: FitResult, norm: FeatureNorm, feats: list[torch.Tensor]) -> np.ndarray:
    """Predictions for one session's clips in order, normalised exactly as the Predictor would."""
    norm.reset()
    normed = [norm(f[None], torch.tensor([f.shape[-2]]))[0] for f in feats]
    return predict(r.bank, normed)


def pooled_predict(
    r: FitResult, norm: FeatureNorm, pooled: torch.Tensor, sums: torch.Tensor, units: list[str]
) -> np.ndarray:
    """Predictions from raw pooled statistics (N, F) and frame sums (N, 3, D): the same as
    sessions_predict on the clips' frames. Under an adaptive normalisation each unit's
    clips are one session in file order (model.normalize.session_stats)."""
    norm.reset()
    if norm.mode in ADAPTIVE:
        mean, std = torch.empty(len(units), sums.shape[-1]), torch.empty(len(units), sums.shape[-1])
        for group in unit_sessions(units):
            g = torch.tensor(group)
            mean[g], std[g] = session_stats(
                sums[g], norm.prior_mean, norm.prior_var, norm.prior_frames, norm.session_frames
            )
    else:
        mean, std = norm.mean, norm.std
    x = normalise_pooled(pooled, mean, std, r.bank.spec.pooling)
    r.bank.eval()
    with torch.inference_mode():
        return r.bank.head(x).float().numpy()


def unit_sessions(units: list[str]) -> list[list[int]]:
    """Indices of each unit's items (a speaker's, say), in file order: one session each."""
    order = sorted(range(len(units)), key=lambda i: units[i])  # stable: file order within a unit
    return [list(run) for _, run in itertools.groupby(order, key=lambda i: units[i])]


def speaker_sessions(items: list[Item]) -> list[list[int]]:
    """Indices of each speaker's items, in file order: one session per speaker."""
    return unit_sessions([it.speaker for it in items])


def sessions_predict(r: FitResult, norm: FeatureNorm, units: list[str], feats: list[torch.Tensor]) -> np.ndarray:
    """Each unit's clips as one session in file order (the normalisation adapting as live)."""
    out = np.zeros((len(feats), r.bank.n_outputs), dtype=np.float32)
    for group in unit_sessions(units):
        out[group] = session_predict(r, norm, [feats[i] for i in group])
    return out


def training_device(cfg: Config) -> torch.device:
    from ..model.compute import resolve_device

    return resolve_device(cfg.runtime.device)
