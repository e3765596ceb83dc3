"""A training run from start to bundle: corpora -> cached features -> evaluate -> fit -> save.

Evaluation comes first and is speaker-independent throughout: every protocol in
[evaluation] (training/protocols.py) trains and tests its folds, optionally also on
perturbed test audio; then the shipped model is trained on all labelled files for the
median of the folds' best epoch counts, and every evaluation is written into its
bundle.json (metrics.evaluations.<name>).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.console import Console

from ..model.bundle import Bundle, save_bundle
from ..model.encoder import load_encoder
from ..model.normalize import (
    FeatureNorm,
)
from ..model.regressor import temper
from .checkpoints import Checkpoints
from .datasets import Dataset, Item, load_corpora
from .encoder_top import load_top, start_layer
from .features import Features, report_problems
from .metrics import fit_temperature, metrics_of_classes
from .probe import probe_predict
from .progress import TrainingProgress
from .protocols import Protocol, default_protocols
from .provenance import provenance, slug
from .report import write_experiment_report
from .sessions import fit_adapted, fit_normalised, training_device
from .train import FitResult

if TYPE_CHECKING:
    from ..config import Config  # the whole config.toml, assembled on top

log = logging.getLogger("emomon")


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
    metrics = metrics_of_classes(pred["clean"], items, emotions, classes)
    metrics["folds"] = n_folds
    if temperatures is not None:
        cal = metrics_of_classes(pred["tempered"], items, emotions, classes, n_boot=0)
        metrics["calibrated"] = {
            "temperature": float(np.median(temperatures)), "temperatures": temperatures,
            "spearman_mean": cal["spearman_mean"],
        }  # fmt: skip
        if "calibration" in cal:  # ECE needs intended emotions; listener shares (ComParE) have none
            metrics["calibrated"]["ece"] = cal["calibration"]["ece"]
    if "frozen" in pred:  # [train] adapt: the same folds with the encoder frozen
        fm = metrics_of_classes(pred["frozen"], items, emotions, classes, n_boot=0)
        metrics["frozen"] = {k: fm[k] for k in ("uar", "spearman_mean") if k in fm}
    if "probe" in pred:
        pm = metrics_of_classes(pred["probe"], items, emotions, classes, n_boot=0)
        metrics["probe"] = {k: pm[k] for k in ("uar", "spearman_mean") if k in pm}
        if "calibration" in pm:
            metrics["probe"]["ece"] = pm["calibration"]["ece"]
    if perturbed:
        metrics["robustness"] = {}
        for p in perturbed:
            m = metrics_of_classes(pred[p], items, emotions, classes, n_boot=0)
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
    out = Path(cfg.train.out or f"models/{ds.name}-{slug(cfg.encoder)}-arch{cfg.regressor.arch}")
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
            f"({(time.monotonic() - started) / 60:.1f} min on {training_device(cfg)})", soft_wrap=True
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
