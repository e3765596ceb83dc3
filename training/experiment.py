"""A training run from start to bundle: corpora -> cached features -> evaluate -> fit -> save.

Evaluation comes first and is speaker-independent throughout: every protocol in
[evaluation] (training/protocols.py) trains and tests its folds, optionally also on
perturbed test audio; then the shipped model is trained on all labelled files for the
median of the folds' best epoch counts, and every evaluation is written into its
bundle.json (metrics.evaluations.<name>).
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.console import Console

from ..model.bundle import Bundle, save_bundle
from ..model.compute import Encoder
from ..model.encoder import load_encoder
from ..model.normalize import (
    ADAPTIVE,
    FeatureNorm,
    feature_stats,
    frame_sums,
    group_standardise_stats,
    per_speaker_standardise,
    session_stats,
    stats_from_sums,
)
from ..model.predictor import Predictor
from ..model.regressor import normalise_pooled, pool_each, temper
from ..model.settings import to_dict
from ..model.specs import LAYERED
from .adapt import Checkpoints, EncoderTop, adapt_fit, load_top, start_layer, through
from .cache import EmbeddingCache
from .datasets import LICENCES, Dataset, DatasetError, Item, load_dataset, merge
from .evaluate import score, write_experiment_report, write_report
from .metrics import fit_temperature
from .probe import probe_predict
from .protocols import Protocol, default_protocols
from .settings import AugmentSettings
from .train import FitResult, Split, balance_weights, collate, fit, predict

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


def load_corpora(cfg: Config) -> Dataset:
    """The [dataset] corpora, merged into one Dataset when there are several, less the
    subsets [dataset] exclude names ("ased.emotion_specific")."""
    kinds, paths = cfg.dataset.kinds, cfg.dataset.paths
    if len(kinds) != len(paths):
        raise DatasetError(
            f"{len(kinds)} dataset kinds ({', '.join(kinds)}) need as many data paths, not {len(paths)}."
        )
    ds = merge([load_dataset(k, d, **_dataset_options(cfg, k)) for k, d in zip(kinds, paths)])
    for name in cfg.dataset.exclude:
        keep = [it for it in ds.items if f"{it.corpus}.{it.subset}" != name]
        if len(keep) == len(ds.items):
            raise DatasetError(f"[dataset] exclude: '{name}' matches no file of the training data.")
        ds.items = keep
    return ds


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
        from ..streamer.audio.segmenter import speech_span

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
    fitted = fit(prepare(*train), dev, emotions, cfg.regressor, cfg.train, epochs, str(_device(cfg)), on_epoch)
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


class TrainingProgress:
    """One Rich display for a whole run: folds done, and the current fit's epochs with its
    training loss, devel mean Spearman and best epoch so far; both with an ETA. Where the
    console is not a terminal (a log file, CI), one line per finished fit instead."""

    def __init__(self, console: Console, folds: int, epochs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console, self.total, self.done = console, folds, 0
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
        )  # fmt: skip
        self.folds = self.bar.add_task("folds", total=folds, info="")
        self.epochs = self.bar.add_task("epochs", total=epochs, info="")
        self.name, self.info, self.started = "", "", time.monotonic()

    def __enter__(self) -> TrainingProgress:
        self.started = time.monotonic()
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start_fit(self, name: str, epochs: int) -> None:
        self.name, self.info = name, ""
        self.bar.reset(self.epochs, total=epochs, description=f"epochs ({name})", info="")

    def epoch(self, row: dict[str, float]) -> None:
        info = f"loss {row['train_loss']:.4f}"
        if "devel_spearman" in row:
            info += f"  devel rho {row['devel_spearman']:.3f}  best epoch {row['best_epoch']}"
        self.info = f"epoch {row['epoch']}, {info}"
        self.bar.update(self.epochs, completed=row["epoch"], info=info)

    def end_fit(self) -> None:
        self.bar.advance(self.folds)
        self.done += 1
        if not self.console.is_terminal:
            spent = time.monotonic() - self.started
            eta = spent / self.done * (self.total - self.done)
            self.console.print(
                f"fit {self.done}/{self.total} ({self.name}) done: {self.info}; "
                f"{spent / 60:.1f} min so far, about {eta / 60:.0f} min to go",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip


def run_protocol(
    protocol: Protocol, feats: Features, cfg: Config, progress: TrainingProgress, console: Console,
    checkpoints: Checkpoints | None = None,
) -> tuple[dict[str, dict], list[FitResult], FeatureNorm]:  # fmt: skip
    """Train and test every fold of `protocol`; returns (metrics by evaluation name: one,
    or one per corpus of a joint k-fold; the fits; the last fold's normalisation). The
    test files are also scored through each [evaluation] perturbation, by the same fold
    models. Where the output is a softmax, each fold also fits a temperature on its devel
    speakers' predictions (held out from training, as the final model's is) and scores the
    test files through it: metrics["calibrated"]."""
    ds, emotions = feats.ds, feats.ds.emotions
    folds = protocol.folds(replace(ds, items=feats.items))
    perturbed = cfg.evaluation.perturbations
    idx = np.concatenate([f.test for f in folds])
    pred = {name: np.zeros((len(idx), len(emotions)), np.float32) for name in ("clean", *perturbed)}
    softmax = cfg.regressor.output_activation == "softmax"
    pred["tempered"] = np.zeros((len(idx), len(emotions)), np.float32)
    if cfg.evaluation.probe:
        pred["probe"] = np.zeros((len(idx), len(emotions)), np.float32)
    if cfg.train.adapt != "none":  # the frozen fit each adapted one started from, scored beside it
        pred["frozen"] = np.zeros((len(idx), len(emotions)), np.float32)
    fits, temperatures, at = [], [], 0
    for k, fold in enumerate(folds):
        progress.start_fit(f"{protocol.name} {k + 1}/{len(folds)}", cfg.train.epochs)
        r, norm = fit_normalised(
            cfg, emotions, feats.split(fold.train, augmented=True), feats.split(fold.devel), on_epoch=progress.epoch
        )
        rows = slice(at, at + len(fold.test))
        if cfg.train.adapt != "none":
            pred["frozen"][rows] = feats.predict(r, norm, fold.test)
            name = f"{protocol.name} {k + 1}/{len(folds)}"
            r, norm = fit_adapted(feats, cfg, fold.train, fold.devel, r, norm, name, checkpoints, progress)
        pred["clean"][rows] = feats.predict(r, norm, fold.test)
        for p in perturbed:
            pred[p][rows] = feats.predict(r, norm, fold.test, p)
        if softmax:
            shares = feats.predict(r, norm, fold.devel)
            temperatures.append(fit_temperature(shares, feats.targets[fold.devel], feats.masks[fold.devel]))
            pred["tempered"][rows] = temper(torch.from_numpy(pred["clean"][rows]), temperatures[-1]).numpy()
        if "probe" in pred:
            train = np.concatenate([fold.train, fold.devel])
            pred["probe"][rows] = probe_predict(feats.means, feats.targets, feats.masks, train, fold.test)
        at += len(fold.test)
        fits.append(r)
        progress.end_fit()
    items = [feats.items[i] for i in idx]
    evaluations = {}
    for part in protocol.parts:
        keep = part.tests(items) if protocol.kind == "joint" else np.ones(len(idx), bool)
        n_folds = len({k for k, f in enumerate(folds) for i in f.test if part._tested(feats.items[i])})
        evaluations[part.name] = _score_protocol(
            part.name, part.classes(ds), emotions, [it for it, k in zip(items, keep) if k],
            {n: a[keep] for n, a in pred.items()}, temperatures if softmax else None, n_folds, perturbed, console,
        )  # fmt: skip
        if cfg.train.adapt != "none":  # per fold: the adaptation epoch its devel speakers chose (0 = frozen)
            evaluations[part.name]["adapt_epochs"] = [r.adapt_epoch for r in fits]
    return evaluations, fits, norm


def _score_protocol(
    name: str, classes: list[int], emotions: tuple[str, ...], items: list[Item], pred: dict[str, np.ndarray],
    temperatures: list[float] | None, n_folds: int, perturbed: tuple[str, ...], console: Console,
) -> dict:  # fmt: skip
    """One evaluation's metrics from its test files' predictions (run_protocol): clean, at
    each fold's temperature, by the linear probe, and through each perturbation."""
    metrics = score_classes(pred["clean"], items, emotions, classes)
    metrics["folds"] = n_folds
    if temperatures is not None:
        cal = score_classes(pred["tempered"], items, emotions, classes, n_boot=0)
        metrics["calibrated"] = {
            "temperature": float(np.median(temperatures)), "temperatures": temperatures,
            "spearman_mean": cal["spearman_mean"],
        }  # fmt: skip
        if "calibration" in cal:  # ECE needs intended emotions; listener shares (ComParE) have none
            metrics["calibrated"]["ece"] = cal["calibration"]["ece"]
    if "frozen" in pred:  # [train] adapt: the same folds with the encoder frozen
        fm = score_classes(pred["frozen"], items, emotions, classes, n_boot=0)
        metrics["frozen"] = {k: fm[k] for k in ("uar", "spearman_mean") if k in fm}
    if "probe" in pred:
        pm = score_classes(pred["probe"], items, emotions, classes, n_boot=0)
        metrics["probe"] = {k: pm[k] for k in ("uar", "spearman_mean") if k in pm}
        if "calibration" in pm:
            metrics["probe"]["ece"] = pm["calibration"]["ece"]
    if perturbed:
        metrics["robustness"] = {}
        for p in perturbed:
            m = score_classes(pred[p], items, emotions, classes, n_boot=0)
            metrics["robustness"][p] = {k: m[k] for k in ("uar", "accuracy", "spearman_mean") if k in m}
            # how often the top emotion (among the scored ones) stays what the clean audio gave
            kept = pred[p][:, classes].argmax(1) == pred["clean"][:, classes].argmax(1)
            metrics["robustness"][p]["top_kept"] = round(float(kept.mean()), 4)
    line = f"{name}: {len(items)} files, {n_folds} fold(s)"
    if "uar" in metrics:
        line += f", UAR {metrics['uar']:.3f} (95 % CI {metrics['uar_ci95'][0]:.3f} to {metrics['uar_ci95'][1]:.3f})"
        line += f", ECE {metrics['calibration']['ece']:.3f}"
        if temperatures is not None:
            line += f" ({metrics['calibrated']['ece']:.3f} at T {metrics['calibrated']['temperature']:.2f})"
        if "probe" in metrics and "uar" in metrics["probe"]:
            line += f", linear probe UAR {metrics['probe']['uar']:.3f}"
        if "frozen" in metrics and "uar" in metrics["frozen"]:
            line += f", frozen encoder UAR {metrics['frozen']['uar']:.3f}"
    console.print(line + f", mean Spearman {metrics['spearman_mean']:.3f}")
    return metrics


def score_classes(pred: np.ndarray, items: list[Item], emotions, classes: list[int], n_boot: int = 1000) -> dict:
    """score() over the emotions `classes` only (arg-max among them, shares renormalised)."""
    sub = pred[:, classes]
    sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None) if (pred >= 0).all() else sub
    targets = np.array([[it.targets[c] for c in classes] for it in items], dtype=np.float32)
    labels = None
    if all(it.label is not None for it in items):
        labels = np.array([classes.index(it.label) for it in items])
    return score(sub, targets, [emotions[c] for c in classes], labels, [it.speaker for it in items], n_boot)


def _device(cfg: Config) -> torch.device:
    from ..model.compute import resolve_device

    return resolve_device(cfg.runtime.device)


def train_experiment(
    cfg: Config, report: Path | None, console: Console, argv: list[str], features_only: bool = False,
    resume: bool = False, evaluate_only: bool = False,
) -> Path | None:  # fmt: skip
    """Run the experiment `cfg` describes: evaluate every protocol, then train the final
    model on all labelled data for the median of the folds' best epochs; returns the bundle.

    `features_only`: fill the embedding cache with everything the run reads (so the
    extraction can run apart, on a GPU machine say), then stop; returns None. `resume`:
    the adapted fits ([train] adapt) continue from their checkpoints. `evaluate_only`: run
    the protocols and write the report, train no final model; returns None.
    """
    ds = load_corpora(cfg)
    console.print(ds.summary())
    report_problems(console, ds.problems, "reading labels")
    out = Path(cfg.train.out or f"models/{ds.name}-{_slug(cfg.encoder)}-arch{cfg.regressor.arch}")
    adapting = cfg.train.adapt != "none"
    # adapting: the cache holds the hidden state the lowest trained layer reads (the prefix)
    spec = replace(cfg.encoder, layer=start_layer(cfg)) if adapting else cfg.encoder
    encoder = load_encoder(spec, cfg.runtime.device, "float32" if adapting else cfg.runtime.dtype)
    top = load_top(cfg, encoder.digest) if adapting and not features_only else None
    started = time.monotonic()
    feats = Features(ds, encoder, cfg, console, top)
    checkpoints = None
    if resume and not adapting:
        console.print("--resume: nothing to resume, [train] adapt is none (the frozen fits run again, in seconds)")
    if adapting and not features_only:
        checkpoints = Checkpoints(Path(cfg.train.checkpoint_dir or f"{out}.checkpoints"), cfg, resume)
        console.print(f"checkpoints of the adapted fits: {checkpoints.folder}", soft_wrap=True)
    if features_only:
        for p in cfg.evaluation.perturbations:
            feats.extract_perturbed(p)
        console.print(
            f"features of {len(feats.items)} files in {feats.cache.folder} "
            f"({(time.monotonic() - started) / 60:.1f} min on {_device(cfg)})", soft_wrap=True
        )  # fmt: skip
        return None
    protocols = [Protocol.parse(p) for p in cfg.evaluation.protocols] or default_protocols(ds)
    n_folds = sum(len(p.folds(replace(ds, items=feats.items))) for p in protocols)
    n_folds += 0 if evaluate_only or len(protocols) == 1 and protocols[0].kind == "split" else 1  # the final model
    evaluations, histories, best_epochs, temperatures, adapt_epochs, cross_adapt = {}, [], [], [], [], []
    with TrainingProgress(console, n_folds, cfg.train.epochs) as progress:
        for protocol in protocols:
            scored, fits, last_norm = run_protocol(protocol, feats, cfg, progress, console, checkpoints)
            evaluations |= scored
            histories += [r.history for r in fits]
            if protocol.kind != "cross":  # trained on data like the final model's
                best_epochs += [r.best_epoch for r in fits]
                adapt_epochs += [r.adapt_epoch for r in fits if r.adapt_epoch is not None]
                temperatures += next(iter(scored.values())).get("calibrated", {}).get("temperatures", [])
            else:
                cross_adapt += [r.adapt_epoch for r in fits if r.adapt_epoch is not None]
        if evaluate_only:
            _experiment_report(report, out, ds, protocols, evaluations, histories, console)
            return None
        labelled = np.array([i for i, it in enumerate(feats.items) if it.targets is not None])
        if len(protocols) == 1 and protocols[0].kind == "split":
            # The paper's recipe: the model trained on the train split, its epoch chosen on devel.
            final, norm, epochs = fits[0], last_norm, fits[0].best_epoch
            console.print(f"final model: the {protocols[0].name} fit (best epoch {epochs})")
        else:
            epochs = int(np.median(best_epochs or [cfg.train.epochs]))
            progress.start_fit("final model", epochs)
            final, norm = fit_normalised(
                cfg, ds.emotions, feats.split(labelled, augmented=True), epochs=epochs, on_epoch=progress.epoch
            )
            adapted = ""
            if adapting:  # the median of the folds' chosen adaptation epochs (0: the frozen encoder won)
                n_adapt = int(np.median(adapt_epochs or cross_adapt or [cfg.train.adapt_epochs]))
                if n_adapt:
                    final, norm = fit_adapted(
                        feats, cfg, labelled, None, final, norm, "final model", checkpoints, progress, n_adapt
                    )
                adapted = f", then {n_adapt} epoch(s) adapting the encoder" if n_adapt else ", the encoder frozen"
            progress.end_fit()
            console.print(
                f"final model: all {len(labelled)} labelled files, {epochs} epochs (median best epoch){adapted}"
            )
    if not temperatures:  # only cross-corpus protocols: their devel speakers are still held out
        temperatures = [t for m in evaluations.values() for t in m.get("calibrated", {}).get("temperatures", [])]
    temperature = float(np.median(temperatures)) if temperatures else 1.0
    metrics = {
        "evaluations": evaluations,
        "final_training": {
            "epochs": epochs, "n": int(len(labelled)), "corpora": ds.corpora(), "temperature": temperature,
            **({"adapt_epochs": final.adapt_epoch or 0} if adapting else {}),
        },
    }  # fmt: skip
    bundle = Bundle(
        emotions=ds.emotions,
        encoder=replace(cfg.encoder, revision=str(getattr(encoder, "revision", cfg.encoder.revision))),
        regressor=cfg.regressor,
        input_dim=encoder.dim,
        mixed_layers=encoder.num_layers if cfg.encoder.layer == "weighted" else 0,
        norm_mean=norm.prior_mean.tolist(),
        norm_std=norm.prior_var.sqrt().tolist(),
        bank=final.bank,
        norm_mode=norm.mode,
        norm_prior_frames=norm.prior_frames,
        norm_session_frames=norm.session_frames,
        temperature=temperature,
        metrics=metrics,
        provenance=provenance(cfg, ds, len(feats.items), argv),
        encoder_digest=getattr(encoder, "digest", ""),
        adapter=final.adapter,
    )
    save_bundle(bundle, out)
    console.print(f"saved bundle: {out}", soft_wrap=True)
    _experiment_report(report, out, ds, protocols, evaluations, histories, console)
    return out


def _experiment_report(
    report: Path | None, out: Path, ds: Dataset, protocols: list[Protocol], evaluations: dict, histories: list,
    console: Console,
) -> None:  # fmt: skip
    """The --report folder: report.md with its plots, and every evaluation in metrics.json."""
    if report is None:
        return
    names = {p.name: [ds.emotions[c] for c in p.classes(ds)] for q in protocols for p in q.parts}
    write_experiment_report(report, f"{out.name}: evaluation", evaluations, names, histories)
    console.print(f"report: {report / 'report.md'}", soft_wrap=True)


def evaluate_bundle(path: Path, cfg: Config, report: Path | None, console: Console) -> dict:
    """Score a saved bundle on a dataset's test (else devel, else all) files, each speaker's
    files as one session in file order, over the emotions every scored file labels."""
    predictor = Predictor.from_bundle(path, cfg.runtime.device, cfg.runtime.dtype)
    ds = load_corpora(cfg)
    missing = [e for e in ds.emotions if e not in predictor.emotions]
    if missing:
        raise DatasetError(
            f"Bundle '{path}' predicts {', '.join(predictor.emotions)}, but dataset {ds.name} is labelled "
            f"with {', '.join(ds.emotions)} ({', '.join(missing)} missing)."
        )
    console.print(ds.summary())
    report_problems(console, ds.problems, "reading labels")
    feats = Features(ds, predictor.encoder, replace(cfg, augment=AugmentSettings()), console)
    labelled = {it.split for it in feats.items if it.targets is not None}
    part = next(p for p in ("test", "devel", "train") if p in labelled)  # held-out first
    keep = [i for i, it in enumerate(feats.items) if it.split == part and it.targets is not None]
    if part == "train":
        console.print(
            f"[yellow]{ds.name} has no held-out split, so all its files are scored: a model trained "
            "on them is not evaluated speaker-independently here.[/yellow]"
        )
    items = [feats.items[k] for k in keep]
    pred = np.zeros((len(keep), len(predictor.emotions)), dtype=np.float32)
    for group in speaker_sessions(items):
        predictor.reset_session()  # "speaker"-mode bundles adapt as they would live
        for i in range(0, len(group), 64):
            x, n = collate([feats.clean[keep[j]] for j in group[i : i + 64]])
            pred[group[i : i + 64]] = predictor.regress(x, n)[0].float().cpu().numpy()
    pred = np.clip(pred[:, [predictor.emotions.index(e) for e in ds.emotions]], 0.0, None)  # dataset order
    masks = np.array([it.mask or [True] * len(ds.emotions) for it in items], dtype=bool)
    classes = [c for c in range(len(ds.emotions)) if masks[:, c].all()]
    metrics = score_classes(pred, items, ds.emotions, classes)
    console.print(
        f"{ds.name} {part}: {metrics['n']} files, mean Spearman {metrics['spearman_mean']:.3f}"
        + (f", UAR {metrics['uar']:.3f}" if "uar" in metrics else "")
    )
    if report is not None:
        sub = [ds.emotions[c] for c in classes]
        targets = np.array([[it.targets[c] for c in classes] for it in items], dtype=np.float32)
        write_report(report, metrics, sub, pred[:, classes], targets, title=f"{Path(path).name} on {ds.name} {part}")
        console.print(f"report: {report / 'report.md'}", soft_wrap=True)
    return metrics


def _dataset_options(cfg: Config, kind: str) -> dict:
    if kind == "emodb":
        return {"target": cfg.dataset.target}
    if kind == "csv":
        return {"devel_fraction": cfg.dataset.devel_fraction, "seed": cfg.train.seed}
    return {}


def _slug(spec) -> str:
    return spec.kind if spec.kind not in LAYERED else Path(spec.name.rstrip("/")).name.lower()


def _licence(kinds: tuple[str, ...]) -> str:
    known = [LICENCES[k] for k in kinds if k in LICENCES]
    if not known:
        return "the licences of the training data apply"
    return "; ".join(known) + ". A model trained on it is for non-commercial research use only."


def ran_on(cfg: Config) -> dict:
    """Where each part of the run ran: the machine, and the device and compute dtype of the
    feature extraction and of the training (bfloat16 autocast while adapting, where chosen)."""
    from ..model.compute import choose_dtype, cpu_name

    device = _device(cfg)
    extract, _ = choose_dtype(cfg.runtime.dtype, device)
    where = {"cpu": cpu_name(), "device": str(device)}
    if device.type == "cuda":
        where["gpu"] = torch.cuda.get_device_name(device)
    if cfg.train.adapt != "none":
        adapting = "bfloat16" if extract == "bfloat16" else "float32"
        where |= {"features": f"{device} float32", "adapting": f"{device} {adapting}"}
    else:
        where["features"] = f"{device} {extract}"
    return where


def provenance(cfg: Config, ds: Dataset, n_items: int, argv: list[str]) -> dict:
    import transformers

    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "emomon " + " ".join(argv),
        "dataset": {
            "kind": list(cfg.dataset.kinds),
            "data": list(cfg.dataset.paths),
            "files_used": n_items,
            "files_left_out": len(ds.problems),
            "speakers": len(ds.speakers()),
        },  # fmt: skip
        "licence": _licence(cfg.dataset.kinds),
        "config": {
            name: to_dict(getattr(cfg, name))
            for name in ("encoder", "regressor", "train", "dataset", "evaluation", "augment", "runtime")
        },
        "ran_on": ran_on(cfg),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "platform": sys.platform,
        },  # fmt: skip
    }
