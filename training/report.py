"""The report folder of a training run or an evaluation: a markdown table and PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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

    plt = _pyplot()
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
        _learning_curves(folder / "learning_curves.png", histories)
        text += "\n![learning curves](learning_curves.png)\n"
    (folder / "report.md").write_text(text)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return folder


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _learning_curves(path: Path, histories: Sequence[Sequence[dict]]) -> None:
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for h in histories:
        ep = [r["epoch"] for r in h]
        a1.plot(ep, [r["train_loss"] for r in h], lw=1, alpha=0.6)
        if h and "devel_spearman" in h[0]:
            a2.plot(ep, [r["devel_spearman"] for r in h], lw=1, alpha=0.6)
    a1.set(title=f"training loss ({len(histories)} fits)", xlabel="epoch", yscale="log")
    a2.set(title="devel mean Spearman", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _ci(m: dict, key: str) -> str:
    lo_hi = m.get(f"{key}_ci95")
    return f"{m[key]:.3f} ({lo_hi[0]:.3f}-{lo_hi[1]:.3f})" if lo_hi else f"{m[key]:.3f}"


def write_experiment_report(
    folder: str | Path,
    title: str,
    evaluations: dict[str, dict],
    class_names: dict[str, list[str]],
    histories: Sequence[Sequence[dict]] = (),
) -> Path:
    """A training run's report: one table of every evaluation (and its robustness), then a
    section per evaluation (per emotion, per speaker, confusion), confusion matrices and the
    calibration of the top share as PNGs, learning curves, and metrics.json."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    perturbations = sorted({p for m in evaluations.values() for p in m.get("robustness", {})})
    adapted = any("frozen" in m for m in evaluations.values())  # [train] adapt: the frozen fits beside
    head = (
        "| evaluation | files | folds | UAR (95 % CI) | linear probe UAR | "
        + ("frozen encoder UAR | " if adapted else "")
        + "accuracy | mean Spearman (95 % CI) | ECE | ECE at T (T) |"
    )
    lines = [f"# {title}", "", head + "".join(f" UAR {p} |" for p in perturbations)]
    lines.append("|---" * (9 + adapted + len(perturbations)) + "|")
    for name, m in evaluations.items():
        probe = m.get("probe", {}).get("uar")
        cal = m.get("calibrated")
        row = f"| {name} | {m['n']} | {m.get('folds', 1)} | {_ci(m, 'uar') if 'uar' in m else '-'} | "
        row += f"{probe:.3f} | " if probe is not None else "- | "
        if adapted:
            frozen = m.get("frozen", {}).get("uar")
            row += f"{frozen:.3f} | " if frozen is not None else "- | "
        row += f"{m.get('accuracy', float('nan')):.3f} | {_ci(m, 'spearman_mean')} | "
        row += f"{m['calibration']['ece']:.3f} |" if "calibration" in m else "- |"
        row += f" {cal['ece']:.3f} ({cal['temperature']:.2f}) |" if cal and "ece" in cal else " - |"
        for p in perturbations:
            r = m.get("robustness", {}).get(p)
            row += f" {r['uar']:.3f} ({r['uar'] - m['uar']:+.3f}) |" if r and "uar" in r else " - |"
        lines.append(row)
    lines += [
        "",
        "ECE: expected calibration error of the top share (0 = a top share of 0.7 is right 70 % of the time); "
        "at T: with the shares tempered by the temperature each fold fitted on its devel speakers (their median).",
    ]
    named = [(n, m) for n, m in evaluations.items() if "confusion" in m]
    if named:
        lines += ["", "![confusion matrices](confusion.png)", "", "![calibration](calibration.png)"]
    if histories:
        _learning_curves(folder / "learning_curves.png", histories)
        lines += ["", "![learning curves](learning_curves.png)"]
    text = "\n".join(lines) + "\n"
    for name, m in evaluations.items():
        text += "\n" + markdown(m, class_names[name], name).replace(f"# {name}", f"## {name}", 1)
    plt = _pyplot()
    if named:
        fig, axes = plt.subplots(1, len(named), figsize=(4.2 * len(named), 4), squeeze=False)
        for ax, (name, m) in zip(axes[0], named):
            cm = np.array(m["confusion"], dtype=float)
            ax.imshow(cm / cm.sum(1, keepdims=True).clip(1), vmin=0, vmax=1, cmap="Blues")
            ticks = range(len(class_names[name]))
            ax.set_xticks(ticks, [e[:4] for e in class_names[name]], rotation=90)
            ax.set_yticks(ticks, [e[:4] for e in class_names[name]])
            ax.set(title=f"{name} (UAR {m['uar']:.2f})", xlabel="predicted", ylabel="true")
        fig.tight_layout()
        fig.savefig(folder / "confusion.png", dpi=90)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for name, m in named:
            b = m["calibration"]["bins"]
            ax.plot(
                [r["confidence"] for r in b],
                [r["accuracy"] for r in b],
                "o-",
                label=f"{name} (ECE {m['calibration']['ece']:.3f})",
            )
        ax.set(xlabel="top share", ylabel="share of files where the top emotion was intended", title="calibration")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "calibration.png", dpi=90)
        plt.close(fig)
    (folder / "report.md").write_text(text)
    (folder / "metrics.json").write_text(json.dumps(evaluations, indent=2) + "\n")
    return folder
