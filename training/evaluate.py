"""`emomon evaluate`: a bundle scored on a labelled dataset's test split, with its report."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from ..model.predictor import Predictor
from .datasets import DatasetError, load_corpora
from .features import Features, report_problems
from .metrics import metrics_of_classes
from .report import write_report
from .sessions import speaker_sessions
from .settings import AugmentSettings
from .train import collate

if TYPE_CHECKING:
    from ..config import Config  # the whole config.toml, assembled on top

log = logging.getLogger("emomon")


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
    metrics = metrics_of_classes(pred, items, ds.emotions, classes)
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
