"""The paper's question on real pretrained frames: does the attention regressor beat the plain one?

    python benchmarks/compare_regressors.py [--config training/experiments/default_whisper_base.toml]
                                            [--protocol emodb:kfold5] [--only NAME ...]

Every variant trains and tests the same speaker-independent folds of one protocol
(default: Emo-DB in five groups of two speakers, Emo-DB alone; emomon's training loop
and evaluation, training/experiment.py), from the default model's recipe with one thing
changed at a time: Architecture 1 (CNN-LSTM-mean), 2 (CNN-LSTM-attention) or 3 (statistics
pooling), the encoder's third layer, its last one or a learned weighting of all of them,
with or without the recipe's augmentation, each trained with the seeds asked for (one run's
UAR moves by 0.04-0.06 from seed to seed on this data: the noise to read differences
against). Mean Spearman of the shares (Emo-DB: the listeners' recognition rates) beside
UAR. The sequence regressors are scaled to this data (convolutions 256-128-64, LSTM 128,
one shared head with a softmax over the nine emotions, the paper's layer layout): the
paper's sizes, nine models of 6.5 M parameters each, took 57 s an epoch on 535 clips
here. Each run (variant, learning rate, seed) is saved as it ends, with the CPU it ran on
(benchmarks/results/compare_regressors.json), so a long comparison can be built a seed at
a time (`--seeds 1` adds seed 1 to every variant named; a run already saved is skipped
unless --again); the table (the compare_regressors section of docs/training.md) has one
row per variant and learning rate, the mean over its saved seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_name, study_args, table, update_doc  # noqa: E402

SEQUENCE = dict(conv_channels=(256, 128, 64), lstm_hidden=128, ff_dims=(64, 32, 16))
VARIANTS = {  # name -> (encoder layer, regressor changes, augmentation views)
    "arch3": (3, dict(arch=3), 2),
    "arch3-noaug": (3, dict(arch=3), 0),
    "arch1": (3, dict(arch=1, **SEQUENCE), 2),
    "arch1-noaug": (3, dict(arch=1, **SEQUENCE), 0),
    "arch2": (3, dict(arch=2, **SEQUENCE), 2),
    "arch2-noaug": (3, dict(arch=2, **SEQUENCE), 0),
    "arch3-last": ("last", dict(arch=3), 0),
    "arch3-weighted": ("weighted", dict(arch=3), 0),
    "arch2-last": ("last", dict(arch=2, **SEQUENCE), 0),
}


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from emomon.config import load_config
    from emomon.model.encoder import load_encoder
    from emomon.training.datasets import load_dataset
    from emomon.training.experiment import run_protocol
    from emomon.training.features import Features
    from emomon.training.progress import TrainingProgress
    from emomon.training.protocols import Protocol

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "training" / "experiments" / "default_whisper_base.toml")
    ap.add_argument("--protocol", default="emodb:kfold5")
    ap.add_argument("--epochs", type=int, default=60, help="at most this many epochs (patience 10)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch size (one corpus has few files per epoch)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (table: the mean)")
    study_args(ap, VARIANTS, ROOT)
    args = ap.parse_args(argv)
    base = load_config(args.config)
    protocol = Protocol.parse(args.protocol)
    corpus = protocol.test_corpus
    ds = load_dataset(corpus, dict(zip(base.dataset.kinds, base.dataset.paths))[corpus])
    console = Console(stderr=True)
    previous = args.out / "compare_regressors.json"
    saved = json.loads(previous.read_text()) if previous.exists() else {}
    if saved.get("protocol", args.protocol) != args.protocol:
        ap.error(f"{previous} holds runs of protocol {saved['protocol']}, not {args.protocol}: choose another --out")
    runs = saved.get("runs", [])  # one entry per variant, learning rate and seed

    def done(name: str, seed: int) -> bool:
        return any((r["variant"], r["lr"], r["seed"]) == (name, args.lr, seed) for r in runs)

    for name in [] if args.table else args.only or VARIANTS:
        todo = [s for s in args.seeds if args.again or not done(name, s)]
        if not todo:
            continue
        layer, changes, views = VARIANTS[name]
        cfg = replace(
            base,
            encoder=replace(base.encoder, layer=layer),
            regressor=replace(base.regressor, **changes),
            augment=replace(base.augment, views=views),
            evaluation=replace(base.evaluation, protocols=(args.protocol,), perturbations=()),
            train=replace(
                base.train,
                epochs=args.epochs,
                patience=10,
                batch_size=args.batch_size,
                lr=args.lr,
                cache_dir=args.cache or base.train.cache_dir,
            ),  # fmt: skip
            dataset=replace(
                base.dataset, kind=(corpus,), data=(dict(zip(base.dataset.kinds, base.dataset.paths))[corpus],)
            ),
        )
        encoder = load_encoder(cfg.encoder, cfg.runtime.device, cfg.runtime.dtype)
        feats = Features(ds, encoder, cfg, console)
        folds = len(protocol.folds(replace(ds, items=feats.items)))
        for seed in todo:  # the same folds, another initialisation, dropout and order; the views stay the recipe's
            t0 = time.perf_counter()
            cfg_seed = replace(cfg, train=replace(cfg.train, seed=seed))
            with TrainingProgress(console, folds, cfg.train.epochs) as progress:
                scored, fits, _ = run_protocol(protocol, feats, cfg_seed, progress, console)
            (m,) = scored.values()
            runs[:] = [r for r in runs if (r["variant"], r["lr"], r["seed"]) != (name, args.lr, seed)]
            runs.append(dict(
                variant=name, lr=args.lr, seed=seed, uar=round(m["uar"], 4), spearman=round(m["spearman_mean"], 4),
                ece=round(m["calibration"]["ece"], 4), best_epochs=[r.best_epoch for r in fits],
                minutes=round((time.perf_counter() - t0) / 60, 1), cpu=cpu_name(), date=time.strftime("%Y-%m-%d"),
                epochs=args.epochs, batch_size=args.batch_size,
            ))  # fmt: skip
            console.print(runs[-1])
            args.out.mkdir(parents=True, exist_ok=True)
            previous.write_text(json.dumps({"protocol": args.protocol, "runs": runs}, indent=1))
    groups = sorted({(r["variant"], r["lr"]) for r in runs}, key=lambda g: (list(VARIANTS).index(g[0]), g[1]))
    rows = [summary(name, lr, [r for r in runs if (r["variant"], r["lr"]) == (name, lr)]) for name, lr in groups]
    cols = [("variant", "variant"), ("arch", "arch"), ("layer", "encoder layer"), ("augmented", "augmented"),
            ("lr", "Adam lr"), ("seeds", "seeds"),
            ("uar", "UAR, mean"), ("uar_seeds", "UAR per seed"), ("spearman", "mean Spearman"), ("ece", "ECE"),
            ("epochs", "mean best epoch"), ("max_epochs", "of at most"), ("minutes", "minutes per seed")]  # fmt: skip
    every = {k: sorted({str(r[k]) for r in runs}) for k in ("date", "cpu", "batch_size")}
    body = (
        f"Run {', '.join(every['date'])} on {' and '.join(every['cpu'])}. Command: `python "
        f"benchmarks/compare_regressors.py --protocol {args.protocol} --seeds S ...`: {corpus} only, the same "
        f"speaker-independent folds for every variant (patience 10, batches of {', '.join(every['batch_size'])}, "
        "Adam at the learning rate shown), Whisper-base features. UAR per seed lists seeds 0, 1, 2, ... in order; "
        "their spread is the noise to read differences against.\n\n" + table(rows, cols)
    )
    print(body)
    update_doc(args.doc, body, "compare_regressors", "The paper's regressors on Whisper frames")
    return 0


def summary(name: str, lr: float, seeds: list[dict]) -> dict:
    """One table row: the mean over the saved seeds of one variant at one learning rate."""
    layer, changes, views = VARIANTS[name]
    seeds = sorted(seeds, key=lambda r: r["seed"])
    mean = lambda key: round(statistics.mean(r[key] for r in seeds), 3)  # noqa: E731
    return dict(
        variant=name, arch=changes["arch"], layer=str(layer), augmented="yes" if views else "no", lr=f"{lr:g}",
        seeds=len(seeds), uar=mean("uar"), uar_seeds=" / ".join(f"{r['uar']:.3f}" for r in seeds),
        spearman=mean("spearman"), ece=mean("ece"),
        epochs=round(statistics.mean(e for r in seeds for e in r["best_epochs"]), 1),
        max_epochs=seeds[0]["epochs"], minutes=round(statistics.mean(r["minutes"] for r in seeds), 1),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
