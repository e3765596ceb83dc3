"""Evaluation results and the report folder (markdown table + PNG plots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.metrics import bootstrap_spearman, confusion, spearman_per_column, unweighted_average_recall


def score(
    pred: np.ndarray,
    targets: np.ndarray,
    emotions: Sequence[str],
    labels: np.ndarray | None = None,
    speakers: Sequence[str] | None = None,
    n_boot: int = 1000,
) -> dict:
    """Spearman per emotion and mean with bootstrap 95 % intervals; UAR where there are
    class labels; the same per speaker where speakers are given. JSON-ready."""
    rho = spearman_per_column(pred, targets)
    low, high = bootstrap_spearman(pred, targets, n_boot)
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
        out["accuracy"] = round(float(np.mean(guess == labels)), 4)
        out["confusion"] = confusion(guess, labels, len(emotions)).tolist()  # rows: true, columns: predicted
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


def markdown(metrics: dict, emotions: Sequence[str], title: str) -> str:
    lo, hi = metrics["spearman_mean_ci95"]
    lines = [f"# {title}", "", f"{metrics['n']} files.", ""]
    if "uar" in metrics:
        lines += [f"- UAR ({len(emotions)} classes): **{metrics['uar']:.3f}**, accuracy {metrics['accuracy']:.3f}"]
    lines += [f"- Mean Spearman: **{metrics['spearman_mean']:.3f}** (95 % CI {lo:.3f} to {hi:.3f})", ""]
    lines += ["| emotion | Spearman | 95 % CI |", "|---|---|---|"]
    for e in emotions:
        a, b = metrics["spearman_ci95"][e]
        lines.append(f"| {e} | {metrics['spearman'][e]:.3f} | {a:.3f} to {b:.3f} |")
    if "per_speaker" in metrics:
        has_uar = "uar" in metrics
        lines += [
            "",
            "| speaker | files | mean Spearman |" + (" UAR |" if has_uar else ""),
            "|---|---|---|" + ("---|" if has_uar else ""),
        ]
        for s, row in metrics["per_speaker"].items():
            uar = f" {row['uar']:.3f} |" if has_uar else ""
            lines.append(f"| {s} | {row['n']} | {row['spearman_mean']:.3f} |{uar}")
    if "confusion" in metrics:
        lines += ["", "Confusion (rows: true, columns: predicted):", ""]
        lines += ["| | " + " | ".join(emotions) + " |", "|---|" + "---|" * len(emotions)]
        for e, row in zip(emotions, metrics["confusion"]):
            lines.append(f"| {e} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    folder: str | Path,
    metrics: dict,
    emotions: Sequence[str],
    pred: np.ndarray,
    targets: np.ndarray,
    histories: Sequence[Sequence[dict]] = (),
    title: str = "Evaluation",
) -> Path:
    """report.md, metrics.json, predicted_vs_true.png and (with histories) learning_curves.png."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(metrics, emotions, title)
    E = len(emotions)
    cols = min(E, 3)
    rows = -(-E // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for k, e in enumerate(emotions):
        ax = axes[k // cols][k % cols]
        ax.scatter(targets[:, k], pred[:, k], s=6, alpha=0.4)
        ax.set_title(f"{e}  (rho {metrics['spearman'][e]:.2f})")
        ax.set_xlabel("true share")
        ax.set_ylabel("predicted share")
    for k in range(E, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    fig.savefig(folder / "predicted_vs_true.png", dpi=90)
    plt.close(fig)
    text += "\n![predicted vs true](predicted_vs_true.png)\n"
    if histories:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, h in enumerate(histories):
            ep = [r["epoch"] for r in h]
            a1.plot(ep, [r["train_loss"] for r in h], lw=1, label=f"run {i + 1}" if len(histories) > 1 else None)
            if h and "devel_spearman" in h[0]:
                a2.plot(ep, [r["devel_spearman"] for r in h], lw=1)
        a1.set(title="training loss (MSE)", xlabel="epoch", yscale="log")
        a2.set(title="devel mean Spearman", xlabel="epoch")
        fig.tight_layout()
        fig.savefig(folder / "learning_curves.png", dpi=90)
        plt.close(fig)
        text += "\n![learning curves](learning_curves.png)\n"
    (folder / "report.md").write_text(text)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return folder
