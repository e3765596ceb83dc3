"""A training run from start to bundle: dataset -> cached embeddings -> fit -> evaluate -> save.

Speaker-independent throughout: ComParE and CSV data come with (or are given) splits by
speaker; Emo-DB is evaluated leave-one-speaker-out, after which the shipped model is
trained on every speaker for the median of the folds' best epoch counts.
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from model.bundle import Bundle, save_bundle
from model.config import Config, to_dict
from model.encoder import Encoder, load_encoder
from model.normalize import FeatureNorm, feature_stats, per_speaker_standardise
from model.predictor import Predictor
from training.cache import EmbeddingCache
from training.datasets import Dataset, DatasetError, Item, load_dataset
from training.evaluate import score, write_report
from training.metrics import spearman_per_column, unweighted_average_recall
from training.train import FitResult, Split, collate, fit, predict

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


def embed(ds: Dataset, encoder: Encoder, cache_dir: Path, console: Console) -> tuple[list[Item], list[torch.Tensor]]:
    """Features for every item that has them, extracting what the cache lacks."""
    cache = EmbeddingCache(cache_dir, encoder)
    report_problems(console, cache.extract([it.path for it in ds.items], console=console), "embedding")
    feats = cache.load([it.path for it in ds.items])
    kept = [(it, f) for it, f in zip(ds.items, feats) if f is not None]
    return [it for it, _ in kept], [f for _, f in kept]


def _split(items: list[Item], feats: list[torch.Tensor], mask: np.ndarray) -> tuple[Split, list[str]]:
    idx = np.flatnonzero(mask)
    targets = np.array([items[i].targets for i in idx], dtype=np.float32)
    return Split([feats[i] for i in idx], targets), [items[i].speaker for i in idx]


def fit_normalised(cfg: Config, emotions, train: tuple[Split, list[str]], devel=None, epochs=None):
    """fit() with the configured input normalisation; returns (FitResult, FeatureNorm).

    "speaker": training (and devel, for model selection) speakers are standardised by
    their own statistics; the returned FeatureNorm starts from the raw training
    statistics and adapts to whoever it hears, as the Predictor's does.
    """
    mean, std = feature_stats(train[0].features)  # the raw training statistics
    if cfg.train.normalization == "speaker":
        norm = FeatureNorm(mean.tolist(), std.tolist(), "speaker", cfg.train.prior_frames)

        def prepare(split: Split, speakers: list[str]) -> Split:
            return Split(per_speaker_standardise(split.features, speakers), split.targets)
    else:
        norm = FeatureNorm(mean.tolist(), std.tolist(), "global")

        def prepare(split: Split, speakers: list[str]) -> Split:
            return Split([(f - mean) / std for f in split.features], split.targets)

    dev = prepare(*devel) if devel is not None else None
    return fit(prepare(*train), dev, emotions, cfg.regressor, cfg.train, epochs, str(_device(cfg))), norm


def session_predict(r: FitResult, norm: FeatureNorm, feats: list[torch.Tensor]) -> np.ndarray:
    """Predictions for one session's clips in order, normalised exactly as the Predictor would."""
    norm.reset()
    normed = [norm(f[None], torch.tensor([f.shape[-2]]))[0] for f in feats]
    return predict(r.bank, normed)


def loso(ds: Dataset, items: list[Item], feats: list[torch.Tensor], cfg: Config, console: Console):
    """Leave-one-speaker-out: each speaker is the test set once; the next speaker in order
    is the devel set for early stopping. The test speaker's files are scored in file order
    as one session (speaker-mode statistics adapt across them, starting from the prior).
    Returns (metrics, predictions, targets, fits)."""
    spk = np.array([it.speaker for it in items])
    speakers = sorted(set(spk))
    if len(speakers) < 3:
        raise DatasetError(f"Leave-one-speaker-out needs at least 3 speakers, not {len(speakers)}.")
    pred = np.zeros((len(items), len(ds.emotions)), dtype=np.float32)
    fits = []
    for k, s in enumerate(speakers):
        dev = speakers[(k + 1) % len(speakers)]
        r, norm = fit_normalised(
            cfg, ds.emotions, _split(items, feats, (spk != s) & (spk != dev)), _split(items, feats, spk == dev)
        )
        test = np.flatnonzero(spk == s)
        pred[test] = session_predict(r, norm, [feats[i] for i in test])
        fits.append(r)
        rho = spearman_per_column(pred[test], np.array([items[i].targets for i in test])).mean()
        extra = ""
        if ds.categorical:
            labels = np.array([items[i].label for i in test])
            extra = f", UAR {unweighted_average_recall(pred[test].argmax(1), labels, len(ds.emotions)):.3f}"
        console.print(f"speaker {s}: best epoch {r.best_epoch}, mean Spearman {rho:.3f}{extra}")
    targets = np.array([it.targets for it in items], dtype=np.float32)
    labels = np.array([it.label for it in items]) if ds.categorical else None
    metrics = score(pred, targets, ds.emotions, labels, speakers=list(spk))
    return metrics, pred, targets, fits


def _device(cfg: Config) -> torch.device:
    from model.encoder import resolve_device

    return resolve_device(cfg.runtime.device)


def train_experiment(cfg: Config, report: Path | None, console: Console, argv: list[str]) -> Path:
    """Run the experiment `cfg` describes; returns the bundle folder."""
    ds = load_dataset(cfg.dataset.kind, cfg.dataset.data, **_dataset_options(cfg))
    console.print(ds.summary())
    report_problems(console, ds.problems, "reading labels")
    encoder = load_encoder(cfg.encoder, cfg.runtime.device, cfg.runtime.dtype)
    items, feats = embed(ds, encoder, cache_dir(cfg), console)
    split = np.array([it.split if it.targets is not None else "unlabelled" for it in items])
    metrics: dict = {}
    histories = []
    if ds.name == "emodb":
        metrics["loso"], pred, targets, fits = loso(ds, items, feats, cfg, console)
        epochs = int(np.median([r.best_epoch for r in fits]))
        histories = [r.history for r in fits]
        console.print(f"final model: all {len(ds.speakers())} speakers, {epochs} epochs (median best epoch)")
        final, norm = fit_normalised(cfg, ds.emotions, _split(items, feats, split == "train"), epochs=epochs)
        metrics["final_training"] = {"epochs": epochs, "speakers": ds.speakers(), "n": len(items)}
        evaluated = "loso"
    else:
        train, devel = _split(items, feats, split == "train"), _split(items, feats, split == "devel")
        if not len(train[0]) or not len(devel[0]):
            raise DatasetError(
                f"Dataset {ds.name} at '{cfg.dataset.data}' needs labelled train and devel files; "
                f"found {len(train[0])} and {len(devel[0])}."
            )
        final, norm = fit_normalised(cfg, ds.emotions, train, devel)
        histories = [final.history]
        pred = session_predict(final, norm, devel[0].features)
        targets = devel[0].targets
        metrics["devel"] = score(pred, targets, ds.emotions)
        metrics["best_epoch"] = final.best_epoch
        test, _ = _split(items, feats, split == "test")
        if len(test):
            metrics["test"] = score(session_predict(final, norm, test.features), test.targets, ds.emotions)
        evaluated = "devel"
    m = metrics[evaluated]
    console.print(
        f"{evaluated}: mean Spearman {m['spearman_mean']:.3f} (95 % CI {m['spearman_mean_ci95'][0]:.3f} to "
        f"{m['spearman_mean_ci95'][1]:.3f})" + (f", UAR {m['uar']:.3f}" if "uar" in m else "")
    )
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
        metrics=metrics,
        provenance=provenance(cfg, ds, len(items), argv),
    )
    out = Path(cfg.train.out or f"models/{ds.name}-{_slug(cfg.encoder)}-arch{cfg.regressor.arch}")
    save_bundle(bundle, out)
    console.print(f"saved bundle: {out}", soft_wrap=True)
    if report is not None:
        write_report(report, m, ds.emotions, pred, targets, histories, title=f"{out.name}: {evaluated}")
        console.print(f"report: {report / 'report.md'}", soft_wrap=True)
    return out


def evaluate_bundle(path: Path, cfg: Config, report: Path | None, console: Console) -> dict:
    """Score a saved bundle on a dataset's devel/test files (all files for Emo-DB)."""
    predictor = Predictor.from_bundle(path, cfg.runtime.device, cfg.runtime.dtype)
    ds = load_dataset(cfg.dataset.kind, cfg.dataset.data, **_dataset_options(cfg))
    if tuple(ds.emotions) != tuple(predictor.emotions):
        raise DatasetError(
            f"Bundle '{path}' predicts {', '.join(predictor.emotions)}, but dataset {ds.name} is labelled "
            f"with {', '.join(ds.emotions)}."
        )
    console.print(ds.summary())
    report_problems(console, ds.problems, "reading labels")
    items, feats = embed(ds, predictor.encoder, cache_dir(cfg), console)
    labelled = {it.split for it in items if it.targets is not None}
    part = next(p for p in ("test", "devel", "train") if p in labelled)  # held-out first
    keep = [i for i, it in enumerate(items) if it.split == part and it.targets is not None]
    if part == "train":
        console.print(
            f"[yellow]{ds.name} has no held-out split, so all its files are scored: a model trained "
            "on them is not evaluated speaker-independently here.[/yellow]"
        )
    # One session per speaker, in file order, so that "speaker"-mode bundles adapt as they would live.
    keep.sort(key=lambda k: items[k].speaker)  # stable: file order within each speaker
    pred = []
    for _, run in itertools.groupby(keep, key=lambda k: items[k].speaker):
        predictor.reset_session()
        group = list(run)
        for i in range(0, len(group), 64):
            x, n = collate([feats[k] for k in group[i : i + 64]])
            pred.append(predictor.regress(x, n)[0].float().cpu().numpy())
    pred = np.concatenate(pred)
    targets = np.array([items[k].targets for k in keep], dtype=np.float32)
    labels = np.array([items[k].label for k in keep]) if ds.categorical else None
    speakers = [items[k].speaker for k in keep] if all(items[k].speaker for k in keep) else None
    metrics = score(pred, targets, ds.emotions, labels, speakers)
    console.print(
        f"{ds.name} {part}: {metrics['n']} files, mean Spearman {metrics['spearman_mean']:.3f}"
        + (f", UAR {metrics['uar']:.3f}" if "uar" in metrics else "")
    )
    if report is not None:
        write_report(report, metrics, ds.emotions, pred, targets, title=f"{Path(path).name} on {ds.name} {part}")
        console.print(f"report: {report / 'report.md'}", soft_wrap=True)
    return metrics


def _dataset_options(cfg: Config) -> dict:
    if cfg.dataset.kind == "emodb":
        return {"target": cfg.dataset.target}
    if cfg.dataset.kind == "csv":
        return {"devel_fraction": cfg.dataset.devel_fraction, "seed": cfg.train.seed}
    return {}


def _slug(spec) -> str:
    return "egemaps" if spec.kind == "egemaps" else Path(spec.name.rstrip("/")).name.lower()


def provenance(cfg: Config, ds: Dataset, n_items: int, argv: list[str]) -> dict:
    import transformers

    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "emomon " + " ".join(argv),
        "dataset": {
            "kind": ds.name,
            "data": str(cfg.dataset.data),
            "files_used": n_items,
            "files_left_out": len(ds.problems),
            "speakers": len(ds.speakers()),
        },  # fmt: skip
        "config": {
            name: to_dict(getattr(cfg, name)) for name in ("encoder", "regressor", "train", "dataset", "runtime")
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "platform": sys.platform,
        },  # fmt: skip
    }
