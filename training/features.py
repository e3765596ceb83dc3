"""Every file's encoder frames for a training run: extracted once into the embedding cache
(clean, augmented views, perturbations), trimmed to speech, and pooled where the fits read
statistics (docs/training.md)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.console import Console

from ..model.compute import Encoder
from ..model.normalize import (
    FeatureNorm,
    frame_sums,
)
from ..model.regressor import pool_each
from .adapt import through
from .cache import EmbeddingCache
from .datasets import Dataset, DatasetError
from .encoder_top import EncoderTop
from .sessions import norm_units, pooled_predict, sessions_predict
from .train import FitResult, Split, balance_weights

if TYPE_CHECKING:
    from ..config import Config  # the whole config.toml, assembled on top

log = logging.getLogger("emomon")


def cache_dir(cfg: Config) -> Path:
    """[train] cache_dir, else $XDG_CACHE_HOME/emomon/embeddings (~/.cache/...)."""
    if cfg.train.cache_dir:
        return Path(cfg.train.cache_dir)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emomon" / "embeddings"


def report_problems(console: Console, problems: list[tuple[str, str]], what: str) -> None:
    """One summary of everything left out: the first few files and reasons, then a count."""
    if not problems:
        return
    console.print(f"[yellow]{len(problems)} file(s) left out while {what}:[/yellow]")
    for f, why in problems[:10]:
        console.print(f"  {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    if len(problems) > 10:
        console.print(f"  ... and {len(problems) - 10} more")


class Features:
    """Every item's cached features: clean, augmented views, and perturbed for robustness.

    All audio is first cut to its speech with the monitor's VAD ([dataset] trim), so a
    training file looks like a live segment. Augmented views are drawn per file and view
    from the training seed and the file's content hash, so the same run gives the same
    copies on any machine and in any file order.
    """

    def __init__(
        self, ds: Dataset, encoder: Encoder, cfg: Config, console: Console, top: EncoderTop | None = None
    ) -> None:
        self.ds, self.cfg, self.console = ds, cfg, console
        # [train] adapt: the cache holds each file's hidden state `top.start` (the prefix), and
        # the frozen top turns it into the frames the frozen fits, the probe and the priors read
        self.top = top
        self.cache = EmbeddingCache(cache_dir(cfg), encoder)
        self.spans: dict[Path, tuple[int, int]] = {}  # speech span per file, found once for every variant
        self._perturbed: dict[str, list[torch.Tensor | None]] = {}
        self.paths = [it.path for it in ds.items]
        problems = self.cache.extract(self.paths, console=console, variant=self._base, transform=self._trimmed)
        report_problems(console, problems, "embedding")
        clean = self.cache.load(self.paths, self._base, stored=top is not None)
        keep = [i for i, f in enumerate(clean) if f is not None]
        self.items = [ds.items[i] for i in keep]
        self.paths = [self.paths[i] for i in keep]
        self.clean = [clean[i] for i in keep]
        E = len(ds.emotions)
        unknown = (float("nan"),) * E  # ComParE's test files have no labels
        self.targets = np.array([it.targets or unknown for it in self.items], dtype=np.float32).reshape(-1, E)
        self.masks = np.array([it.mask or [True] * E for it in self.items], dtype=bool).reshape(-1, E)  # (N, E)
        self.views: list[list[torch.Tensor]] = [[] for _ in keep]
        for k in range(cfg.augment.views):
            name = f"aug{k}-{self._digest(cfg.augment)}"
            for i, f in enumerate(self._variant(name, self._augmenter(k), stored=top is not None)):
                if f is not None:
                    self.views[i].append(f)
        self._pooled_perturbed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._means: torch.Tensor | None = None
        if top is not None:  # adapted fits read the prefix frames; the frozen ones, these statistics
            n_views = min((len(v) for v in self.views), default=0)
            self.prefix, self.prefix_views = self.clean, self.views
            layers = f"layers {top.start + 1}-{top.top}" if top.top > top.start + 1 else f"layer {top.top}"
            console.print(f"running the frozen {layers} over {len(self.items)} files ({1 + n_views} versions)")
            versions = [through(top, self.clean, cfg.regressor.pooling, cfg)]
            versions += [through(top, [v[k] for v in self.views], cfg.regressor.pooling, cfg) for k in range(n_views)]
            self.sums = versions[0][1]
            self.pooled = torch.stack([p for p, _ in versions])
        elif self.pools:
            n_views = min((len(v) for v in self.views), default=0)
            console.print(f"pooling the statistics of {len(self.items)} files ({1 + n_views} versions)")
            self.sums = torch.stack([frame_sums(f) for f in self.clean])  # (N, 3, D)
            views = [self._pool([v[k] for v in self.views]) for k in range(n_views)]
            self.pooled = torch.stack([self._pool(self.clean), *views])  # (1 + views, N, F)
            self.views = [[] for _ in keep]  # the fits read the statistics: the views' frames can go

    @property
    def pools(self) -> bool:
        """Whether fits start from each file's pooled statistics, computed once per run
        instead of once per fold: Architecture 3 without attention on one encoder layer, normalised globally
        (a per-dimension affine map, which every statistic commutes with:
        model.regressor.normalise_pooled)."""
        one_layer = not self.clean or self.clean[0].dim() == 2
        spec = self.cfg.regressor
        return spec.arch == 3 and not spec.attentive and one_layer

    def _pool(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """(N, F) statistics of each file's frames."""
        return pool_each(feats, self.cfg.regressor.pooling)

    def pooled_perturbed(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, F) pooled statistics and (N, 3, D) frame sums of every file through one
        perturbation (see pools)."""
        if name not in self._pooled_perturbed:
            feats = self._perturbed.get(name) or self._perturb(name)  # the frames are not kept
            missing = [p for p, f in zip(self.paths, feats) if f is None]
            if missing:
                raise DatasetError(f"{missing[0]} has no features through perturbation '{name}'.")
            if self.top is not None:
                self._pooled_perturbed[name] = through(self.top, feats, self.cfg.regressor.pooling, self.cfg)
            else:
                self._pooled_perturbed[name] = (self._pool(feats), torch.stack([frame_sums(f) for f in feats]))
        return self._pooled_perturbed[name]

    @property
    def _base(self) -> str:
        return "speech" if self.cfg.dataset.trim else ""

    @staticmethod
    def _digest(obj) -> str:
        import hashlib

        return hashlib.sha256(repr(obj).encode()).hexdigest()[:10]

    def _trimmed(self, i: int, audio: np.ndarray) -> np.ndarray:
        if not self.cfg.dataset.trim:
            return audio
        from ..streamer.audio.stream import speech_span

        path = self.paths[i]
        if path not in self.spans:
            self.spans[path] = speech_span(audio, self.cfg.vad)
        a, b = self.spans[path]
        return audio[a:b]

    def _seed(self, i: int, k: int) -> np.random.Generator:
        h = int(self.cache.hash_of(self.paths[i])[:12], 16)
        return np.random.default_rng([self.cfg.train.seed, k, h])

    def _augmenter(self, k: int):
        from .augment import augment

        return lambda i, a: augment(self._trimmed(i, a), self.cfg.augment, self._seed(i, k))

    def _variant(self, name: str, transform, stored: bool = False, load: bool = True) -> list[torch.Tensor | None]:
        """Every item's features through `transform` (variant `name`): extracted where the
        cache lacks them, then read (unless `load` is False)."""
        variant = f"{self._base}+{name}"
        report_problems(
            self.console, self.cache.extract(self.paths, console=self.console, variant=variant, transform=transform),
            f"embedding {name}",
        )  # fmt: skip
        return self.cache.load(self.paths, variant, stored) if load else []

    def perturbed(self, name: str) -> list[torch.Tensor | None]:
        """Every item's features through one robustness perturbation ("white:20", ...),
        extracted and read from the cache once per run, whichever protocols ask; kept in
        their stored dtype (float16 for SSL and Whisper) since they are only scored."""
        if name not in self._perturbed:
            self._perturbed[name] = self._perturb(name)
        return self._perturbed[name]

    def _perturb(self, name: str, load: bool = True) -> list[torch.Tensor | None]:
        from .augment import perturb

        def transform(i: int, a: np.ndarray) -> np.ndarray:
            return perturb(self._trimmed(i, a), name, seed=int(self.cache.hash_of(self.paths[i])[:8], 16))

        return self._variant(name, transform, stored=True, load=load)

    def extract_perturbed(self, name: str) -> None:
        """Put every item's features through perturbation `name` in the cache, reading none."""
        self._perturb(name, load=False)

    @property
    def means(self) -> torch.Tensor:
        """(N, D) each file's mean frame (the linear probe's input)."""
        if self._means is None:
            if self.pools:
                self._means = (self.sums[:, 1] / self.sums[:, 0]).float()
            else:
                self._means = torch.stack([f.float().reshape(-1, f.shape[-1]).mean(0) for f in self.clean])
        return self._means

    def predict(
        self, r: FitResult, norm: FeatureNorm, idx: np.ndarray, perturbation: str = "", units: list[str] | None = None
    ) -> np.ndarray:
        """A fit's shares (len(idx), E) for items `idx`, clean or through a perturbation,
        each session's files in file order, normalised as the Predictor would (a session:
        a speaker, or in "corpus" mode a corpus; or each item's entry in `units`)."""
        items = [self.items[i] for i in idx]
        units = units or norm_units(items, self.cfg.train.normalization)
        if r.top is not None:  # an adapted fit: its own top over the files' prefix frames
            frames = self.perturbed(perturbation) if perturbation else self.prefix
            pooled, sums = through(r.top, [frames[i] for i in idx], self.cfg.regressor.pooling, self.cfg)
            return pooled_predict(r, norm, pooled, sums, units)
        if self.pools:
            pooled, sums = self.pooled_perturbed(perturbation) if perturbation else (self.pooled[0], self.sums)
            return pooled_predict(r, norm, pooled[idx], sums[idx], units)
        feats = self.perturbed(perturbation) if perturbation else self.clean
        return sessions_predict(r, norm, units, [feats[i].float() for i in idx])

    def split(self, idx: np.ndarray, augmented: bool = False) -> tuple[Split, list[str]]:
        """Items `idx` as a Split, with each file's normalisation unit (norm_units)."""
        items = [self.items[i] for i in idx]
        split = Split(
            [self.clean[i] for i in idx],
            self.targets[idx],
            self.masks[idx],
            [self.views[i] for i in idx] if augmented and not self.pools else [],
            weights=balance_weights([it.corpus for it in items], [it.speaker for it in items], self.cfg.train.balance),
        )
        if self.pools:
            split.pooled = self.pooled[:, idx] if augmented else self.pooled[:1, idx]
            split.sums = self.sums[idx]
        return split, norm_units(items, self.cfg.train.normalization)
