"""Evaluation metrics: Spearman's rho per emotion (the challenge metric), bootstrap
confidence intervals, and unweighted average recall for categorical data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .datasets import Item


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along axis 0 (ties share their mean rank), column by column."""
    from scipy.stats import rankdata

    return rankdata(x, axis=0)


def spearman_per_column(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Spearman's rho of each column (N, E) -> (E,). A constant column scores 0, not NaN."""
    rp, rt = _ranks(pred), _ranks(true)
    rp = rp - rp.mean(0)
    rt = rt - rt.mean(0)
    denom = np.sqrt((rp**2).sum(0) * (rt**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rp * rt).sum(0) / denom
    return np.where(denom > 0, rho, 0.0)


def bootstrap_spearman(
    pred: np.ndarray, true: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile-bootstrap intervals, resampling files with replacement.

    Returns (low, high), each (E + 1,): the E emotions, then their mean.
    """
    rng = np.random.default_rng(seed)
    N = len(pred)
    stats = np.empty((n_boot, pred.shape[1] + 1))
    for b in range(n_boot):
        idx = rng.integers(0, N, N)
        rho = spearman_per_column(pred[idx], true[idx])
        stats[b, :-1], stats[b, -1] = rho, rho.mean()
    return np.percentile(stats, 2.5, axis=0), np.percentile(stats, 97.5, axis=0)


def unweighted_average_recall(pred_class: np.ndarray, true_class: np.ndarray, n_classes: int) -> float:
    """Mean over classes of the share of that class's files predicted as it (balanced accuracy)."""
    recalls = [np.mean(pred_class[true_class == c] == c) for c in range(n_classes) if np.any(true_class == c)]
    return float(np.mean(recalls))


def confusion(pred_class: np.ndarray, true_class: np.ndarray, n_classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    m = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(m, (true_class, pred_class), 1)
    return m


def bootstrap_uar(pred_class: np.ndarray, true_class: np.ndarray, n_classes: int, n_boot: int = 1000, seed: int = 0):
    """95 % percentile-bootstrap interval (low, high) of the UAR, resampling files."""
    rng = np.random.default_rng(seed)
    N = len(pred_class)
    stats = [
        unweighted_average_recall(pred_class[i], true_class[i], n_classes)
        for i in (rng.integers(0, N, N) for _ in range(n_boot))
    ]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def calibration(shares: np.ndarray, true_class: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of the top share, and the reliability table behind it.

    Files are binned by their top share (confidence); in each bin the mean confidence is
    compared with how often the top emotion was the intended one. ECE is the files-weighted
    mean gap (0 = the top share means what it says)."""
    conf = shares.max(1)
    hit = (shares.argmax(1) == true_class).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            table.append(
                {
                    "low": round(edges[b], 2),
                    "high": round(edges[b + 1], 2),
                    "n": int(m.sum()),
                    "confidence": round(float(conf[m].mean()), 4),
                    "accuracy": round(float(hit[m].mean()), 4),
                }
            )
            ece += m.mean() * abs(conf[m].mean() - hit[m].mean())
    return {"ece": round(float(ece), 4), "bins": table}


def fit_temperature(shares: np.ndarray, targets: np.ndarray, masks: np.ndarray) -> float:
    """The temperature T that minimises the cross-entropy of held-out target shares against
    tempered predicted shares (model.regressor.temper), each file's restricted to the
    emotions its corpus labels: a 1-D search over log T in [-1.5, 1.5] (T 0.22 to 4.5),
    coarse grid then fine."""
    logp = np.log(np.clip(shares.astype(np.float64), 1e-12, None))
    m = masks.astype(bool)

    def loss(t: float) -> float:
        z = np.where(m, logp / t, -np.inf)
        z = z - z.max(1, keepdims=True)
        logq = np.where(m, z - np.log(np.exp(z).sum(1, keepdims=True)), 0.0)  # 0, not -inf, off the mask
        return float(-(targets * logq).sum(1).mean())

    grid = np.linspace(-1.5, 1.5, 61)
    best = grid[int(np.argmin([loss(np.exp(g)) for g in grid]))]
    fine = np.linspace(best - 0.05, best + 0.05, 21)
    return round(float(np.exp(fine[int(np.argmin([loss(np.exp(g)) for g in fine]))])), 4)


def metrics_of(
    pred: np.ndarray,
    targets: np.ndarray,
    emotions: Sequence[str],
    labels: np.ndarray | None = None,
    speakers: Sequence[str] | None = None,
    n_boot: int = 1000,
) -> dict:
    """Spearman per emotion and mean with bootstrap 95 % intervals; UAR (with its interval),
    accuracy, confusion and the top share's calibration where there are class labels; the
    same per speaker where speakers are given. JSON-ready. n_boot = 0 skips the intervals."""
    rho = spearman_per_column(pred, targets)
    low, high = bootstrap_spearman(pred, targets, n_boot) if n_boot else (np.full(len(rho) + 1, np.nan),) * 2
    out: dict = {
        "n": int(len(pred)),
        "spearman_mean": round(float(rho.mean()), 4),
        "spearman_mean_ci95": [round(float(low[-1]), 4), round(float(high[-1]), 4)],
        "spearman": {e: round(float(r), 4) for e, r in zip(emotions, rho)},
        "spearman_ci95": {e: [round(float(a), 4), round(float(b), 4)] for e, a, b in zip(emotions, low, high)},
    }
    if labels is not None:
        guess = pred.argmax(1)
        out["uar"] = round(unweighted_average_recall(guess, labels, len(emotions)), 4)
        if n_boot:
            out["uar_ci95"] = [round(v, 4) for v in bootstrap_uar(guess, labels, len(emotions), n_boot)]
        out["accuracy"] = round(float(np.mean(guess == labels)), 4)
        out["confusion"] = confusion(guess, labels, len(emotions)).tolist()  # rows: true, columns: predicted
        out["calibration"] = calibration(pred, labels)
    if speakers is not None:
        spk = np.asarray(speakers)
        out["per_speaker"] = {}
        for s in sorted(set(speakers)):
            m = spk == s
            row = {"n": int(m.sum()), "spearman_mean": round(float(spearman_per_column(pred[m], targets[m]).mean()), 4)}
            if labels is not None:
                row["uar"] = round(unweighted_average_recall(pred[m].argmax(1), labels[m], len(emotions)), 4)
            out["per_speaker"][s] = row
    return out


def metrics_of_classes(pred: np.ndarray, items: list[Item], emotions, classes: list[int], n_boot: int = 1000) -> dict:
    """metrics_of() over the emotions `classes` only (arg-max among them, shares renormalised)."""
    sub = pred[:, classes]
    sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None) if (pred >= 0).all() else sub
    targets = np.array([[it.targets[c] for c in classes] for it in items], dtype=np.float32)
    labels = None
    if all(it.label is not None for it in items):
        labels = np.array([classes.index(it.label) for it in items])
    return metrics_of(sub, targets, [emotions[c] for c in classes], labels, [it.speaker for it in items], n_boot)
