"""The paper's question on real pretrained frames: does the attention regressor beat the plain one?

    python benchmarks/compare_regressors.py [--config training/experiments/default_whisper_base.toml]
                                            [--protocol emodb:kfold5] [--only NAME ...]

Every variant trains and tests the same speaker-independent folds of one protocol
(default: Emo-DB in five groups of two speakers, Emo-DB alone; emomon's training loop
and evaluation, training/experiment.py), from the default model's recipe with one thing
changed at a time: Architecture 1 (CNN-LSTM-mean), 2 (CNN-LSTM-attention) or 3 (statistics
pooling), the encoder's third layer, its last one or a learned weighting of all of them,
with or without the recipe's augmentation. Mean Spearman of the shares (Emo-DB: the
listeners' recognition rates) beside UAR. The sequence regressors are scaled to this data
(convolutions 256-128-64, LSTM 128, one shared head with a softmax over the nine
emotions, the paper's layer layout): the paper's sizes, nine models of 6.5 M parameters
each, took 57 s an epoch on 535 clips here. Writes benchmarks/results/compare_regressors.json
and the compare_regressors section of docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import table, update_doc  # noqa: E402

SEQUENCE = dict(conv_channels=(256, 128, 64), lstm_hidden=128, ff_dims=(64, 32, 16))
VARIANTS = {  # name -> (encoder layer, regressor changes, augmentation views)
    "arch3": (3, dict(arch=3), 2),
    "arch3-noaug": (3, dict(arch=3), 0),
    "arch1": (3, dict(arch=1, **SEQUENCE), 2),
    "arch2": (3, dict(arch=2, **SEQUENCE), 2),
    "arch3-last": ("last", dict(arch=3), 0),
    "arch3-weighted": ("weighted", dict(arch=3), 0),
}


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from emomon.model.encoder import load_encoder
    from emomon.streamer.config import load_config
    from emomon.training.datasets import load_dataset
    from emomon.training.experiment import Features, TrainingProgress, run_protocol
    from emomon.training.protocols import Protocol

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "training" / "experiments" / "default_whisper_base.toml")
    ap.add_argument("--protocol", default="emodb:kfold5")
    ap.add_argument("--epochs", type=int, default=60, help="at most this many epochs (patience 10)")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run these variants only")
    ap.add_argument("--cache", default="", help="embedding cache folder ([train] cache_dir)")
    ap.add_argument("--table", action="store_true", help="only rewrite the table from the saved results")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "training.md")
    args = ap.parse_args(argv)
    base = load_config(args.config)
    protocol = Protocol.parse(args.protocol)
    corpus = protocol.test_corpus
    ds = load_dataset(corpus, dict(zip(base.dataset.kinds, base.dataset.paths))[corpus])
    console = Console(stderr=True)
    previous = args.out / "compare_regressors.json"
    rows = {r["variant"]: r for r in (json.loads(previous.read_text())["rows"] if previous.exists() else [])}
    for name in [] if args.table else args.only or VARIANTS:
        layer, changes, views = VARIANTS[name]
        cfg = replace(
            base,
            encoder=replace(base.encoder, layer=layer),
            regressor=replace(base.regressor, **changes),
            augment=replace(base.augment, views=views),
            evaluation=replace(base.evaluation, protocols=(args.protocol,), perturbations=()),
            train=replace(base.train, epochs=args.epochs, patience=10, cache_dir=args.cache or base.train.cache_dir),
            dataset=replace(
                base.dataset, kind=(corpus,), data=(dict(zip(base.dataset.kinds, base.dataset.paths))[corpus],)
            ),
        )
        t0 = time.perf_counter()
        encoder = load_encoder(cfg.encoder, cfg.runtime.device, cfg.runtime.dtype)
        feats = Features(ds, encoder, cfg, console)
        folds = len(protocol.folds(replace(ds, items=feats.items)))
        with TrainingProgress(console, folds, cfg.train.epochs) as progress:
            m, fits, _ = run_protocol(protocol, feats, cfg, progress, console)
        rows[name] = dict(
            variant=name, arch=cfg.regressor.arch, layer=str(layer), augmented="yes" if views else "no",
            uar=round(m["uar"], 3), uar_ci=f"{m['uar_ci95'][0]:.3f}-{m['uar_ci95'][1]:.3f}",
            spearman=round(m["spearman_mean"], 3), ece=round(m["calibration"]["ece"], 3),
            epochs=round(sum(r.best_epoch for r in fits) / len(fits), 1),
            minutes=round((time.perf_counter() - t0) / 60, 1),
        )  # fmt: skip
        console.print(rows[name])
        args.out.mkdir(parents=True, exist_ok=True)
        previous.write_text(json.dumps({"protocol": args.protocol, "date": time.strftime("%Y-%m-%d"),
                                        "rows": list(rows.values())}, indent=1))  # fmt: skip
    cols = [("variant", "variant"), ("arch", "arch"), ("layer", "encoder layer"), ("augmented", "augmented"),
            ("uar", "UAR"), ("uar_ci", "95 % CI"), ("spearman", "mean Spearman"), ("ece", "ECE"),
            ("epochs", "mean best epoch"), ("minutes", "minutes")]  # fmt: skip
    body = (
        f"Run {time.strftime('%Y-%m-%d')}. Command: `python benchmarks/compare_regressors.py --protocol "
        f"{args.protocol}`: {corpus} only, the same speaker-independent folds for every variant, up to "
        f"{args.epochs} epochs (patience 10), Whisper-base features.\n\n"
        + table([rows[n] for n in VARIANTS if n in rows], cols)
    )
    print(body)
    update_doc(args.doc, body, "compare_regressors", "The paper's regressors on Whisper frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
