"""`emomon train` and `emomon evaluate`: argument parsing; the work is in training.experiment."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..model.errors import ConfigError, require
from .datasets import DATASET_KINDS

if TYPE_CHECKING:
    from ..config import Config


def add_parsers(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    t = sub.add_parser(
        "train",
        parents=parents,
        help="train regressors on labelled speech and save a bundle",
        description="Train regressors on cached encoder embeddings and save a model bundle. "
        "Options default from the config file's tables (the shipped model's encoder and regressor; "
        "training/experiments/compare23_*.toml hold the paper's); a TOML experiment file passed as "
        "--config describes a whole run.",
    )
    _dataset_args(t)
    t.add_argument(
        "--encoder", help="hub id or local folder of an SSL or Whisper encoder (openai/whisper-base, ...), or 'egemaps'"
    )
    t.add_argument("--layer", help="encoder layer: last, weighted, or a hidden-state index")
    t.add_argument(
        "--arch", type=int, choices=(1, 2, 3),
        help="regressor architecture: 1 mean over time, 2 the paper's attention, 3 statistics pooling (the default's)",
    )  # fmt: skip
    t.add_argument("--head", choices=("per_emotion", "shared"), help="one regressor per emotion, or one shared")
    t.add_argument("--epochs", type=int, help="maximum epochs")
    t.add_argument("--out", help="bundle folder to write")
    t.add_argument("--report", type=Path, help="also write a report folder (markdown + plots)")
    t.add_argument(
        "--features-only", action="store_true",
        help="only extract every embedding the run needs into the cache (clean, augmented, perturbed), then stop",
    )  # fmt: skip
    t.add_argument(
        "--evaluate-only", action="store_true",
        help="run the [evaluation] protocols and write the --report, but train and save no final model",
    )  # fmt: skip
    t.add_argument(
        "--resume", action="store_true",
        help="continue the adapted fits ([train] adapt) from their checkpoints instead of starting them again",
    )  # fmt: skip
    t.set_defaults(run=run_train)

    e = sub.add_parser(
        "evaluate",
        parents=parents,
        help="score a bundle on a labelled dataset",
        description="Score a model bundle on a dataset's test split (or devel, or all files when it has neither).",
    )
    e.add_argument("bundle", type=Path, help="model bundle folder")
    _dataset_args(e)
    e.add_argument("--report", type=Path, help="write a report folder (markdown + plots)")
    e.set_defaults(run=run_evaluate)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help=f"dataset layout ({', '.join(DATASET_KINDS)}); several with commas: emodb,ravdess")
    p.add_argument("--data", help="dataset folder or manifest CSV (csv); one per --dataset kind, with commas")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--cache", help="embedding cache folder")


def apply_flags(cfg: Config, args: argparse.Namespace) -> Config:
    """Flags override the config file, table by table."""
    try:
        return _apply_flags(cfg, args)
    except ValueError as e:  # a dataclass's own check on the combined settings
        raise ConfigError(f"These options do not go together: {e}.") from e


def _apply_flags(cfg: Config, args: argparse.Namespace) -> Config:
    ds, enc, reg, train, rt = cfg.dataset, cfg.encoder, cfg.regressor, cfg.train, cfg.runtime
    if args.dataset:
        unknown = [k for k in args.dataset.split(",") if k not in DATASET_KINDS]
        if unknown:
            raise ConfigError(
                f"--dataset {unknown[0]} is not a dataset layout (choose from {', '.join(DATASET_KINDS)})."
            )
        ds = replace(ds, kind=args.dataset, data=args.data or ds.data)
    if args.data:
        ds = replace(ds, data=args.data)
    if not ds.kinds or not ds.paths:
        raise ConfigError("Say which data to use: --dataset and --data (or [dataset] kind and data in the config).")
    if args.device:
        rt = replace(rt, device=args.device)
    if args.cache:
        train = replace(train, cache_dir=args.cache)
    if getattr(args, "encoder", None):
        name = args.encoder.lower()
        if name in ("egemaps", "egemapsv02"):
            enc = replace(enc, kind="egemaps", name="eGeMAPSv02", layer="last")
        elif args.encoder != enc.name:  # a Whisper checkpoint by its name, any other transformers
            # encoder as ssl; another encoder starts from its last layer (--layer picks another)
            kind = "whisper" if "whisper" in Path(name.rstrip("/")).name else "ssl"
            enc = replace(enc, kind=kind, name=args.encoder, layer="last")
    if getattr(args, "layer", None):
        layer = int(args.layer) if args.layer.isdigit() else args.layer
        if layer not in ("last", "weighted") and not isinstance(layer, int):
            raise ConfigError(f"--layer {args.layer} is not 'last', 'weighted' or a layer index.")
        enc = replace(enc, layer=layer)
    if getattr(args, "arch", None):
        reg = replace(reg, arch=args.arch)
    if getattr(args, "head", None):  # nine regressors have no ensemble of shared heads
        reg = replace(reg, head=args.head, ensemble=reg.ensemble if args.head == "shared" else 1)
    if getattr(args, "epochs", None):
        train = replace(train, epochs=args.epochs)
    if getattr(args, "out", None):
        train = replace(train, out=args.out)
    return replace(cfg, encoder=enc, regressor=reg, runtime=rt, train=train, dataset=ds)


def run_train(args: argparse.Namespace, cfg: Config, console, argv: list[str]) -> int:
    require("train", "emomon train", "scipy", "matplotlib")
    from .experiment import train_experiment

    train_experiment(
        apply_flags(cfg, args),
        args.report,
        console,
        argv,
        features_only=args.features_only,
        resume=args.resume,
        evaluate_only=args.evaluate_only,
    )
    return 0


def run_evaluate(args: argparse.Namespace, cfg: Config, console, argv: list[str]) -> int:
    require("train", "emomon evaluate", "scipy", "matplotlib")
    from .evaluate import evaluate_bundle

    evaluate_bundle(args.bundle, apply_flags(cfg, args), args.report, console)
    return 0
