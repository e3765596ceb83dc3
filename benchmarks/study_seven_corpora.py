"""The default model on seven corpora: what each choice of the recipe does where it matters.

    python benchmarks/study_seven_corpora.py [--only VARIANT ...] [--seeds 0 1 2] [--protocols loco|within]

Every variant trains and tests the same speaker-independent folds with emomon's own
training loop (training/experiment.py), from the default recipe
(training/experiments/default_whisper_base.toml) with one thing changed at a time:
corpus balance, how the loss treats emotions a corpus does not label, whether ASED's
emotion-specific sentences train, augmentation, attentive statistics pooling, the input
normalisation. `--protocols loco` (default) is leave one corpus out, all seven (trained on
six, tested on the seventh over the emotions it shares with them; ASED on its common
sentences, BanglaSER on its main part); `within` is each corpus speaker-independently, all
seven in one 5-fold run (each fold holds out a fifth of every corpus's speakers; the other
corpora's remaining speakers train too). Beside every row, the linear probe the goals are set against
(training/probe.py: logistic regression on mean-pooled frames of the same layer, the same
folds and masks), fitted inside each run.

Each run (variant, protocols, seed) is saved as it ends with the CPU it ran on
(benchmarks/results/study_seven_corpora.json) and skipped next time unless --again; the
table (the study_seven_corpora section of docs/training.md) has one row per variant: the
mean UAR, the lowest protocol and ECE before and after the devel-fitted temperature.
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

CORPORA = ("emodb", "ravdess", "nemo", "ased", "banglaser", "eyase", "indowave")
TESTED = {"ased": "ased.common", "banglaser": "banglaser.main"}  # around the confounds (datasets' READMEs)
PROTOCOLS = {
    "loco": tuple(f"*>{TESTED.get(c, c)}" for c in CORPORA),
    "within": ("emodb+ravdess+nemo+ased.common+banglaser.main+eyase+indowave:kfold5",),
}  # fmt: skip
ATTENTIVE = ("amean", "astd", "p10", "p50", "p90")
VARIANTS = {  # name -> (what changes, {table: {key: value}})
    "base": ("the recipe on seven corpora: every file, one head, global normalisation, no augmentation", {}),
    "balance-corpus": ("every corpus weighs the same", {"train": {"balance": "corpus"}}),
    "balance-speaker": ("every corpus, and within it every speaker, the same", {"train": {"balance": "speaker"}}),
    "unmasked": ("emotions a corpus does not label count as 0 (softmax over all nine)", {"unmasked": True}),
    "no-ased-specific": (
        "ASED's emotion-specific sentences do not train",
        {"dataset": {"exclude": ("ased.emotion_specific",)}},
    ),
    "ensemble": ("five heads from five initialisations, their shares averaged", {"regressor": {"ensemble": 5}}),
    "norm-speaker-ensemble": (
        "norm-speaker with five heads",
        {"train": {"normalization": "speaker"}, "regressor": {"ensemble": 5}},
    ),
    "norm-corpus-ensemble": (
        "norm-corpus with five heads",
        {"train": {"normalization": "corpus"}, "regressor": {"ensemble": 5}},
    ),
    "norm-corpus-ensemble-slow": (
        "norm-corpus-ensemble, the training statistics worth 15,000 frames (5 minutes)",
        {"train": {"normalization": "corpus", "prior_frames": 15000}, "regressor": {"ensemble": 5}},
    ),
    "augment": ("two augmented views per file (phone, codec, room, noise, crop)", {"augment": {"views": 2}}),
    "attentive": ("attentive statistics pooling", {"regressor": {"pooling": ATTENTIVE}}),
    "meanstd": ("mean and standard deviation only", {"regressor": {"pooling": ("mean", "std")}}),
    "attentive-meanstd": (
        "attention-weighted mean and standard deviation only (scorer 512 -> 32 -> 1)",
        {"regressor": {"pooling": ("amean", "astd"), "attention_dim": 32}},
    ),
    "norm-speaker": (
        "each speaker standardised; live, the statistics adapt to the session",
        {"train": {"normalization": "speaker"}},
    ),
    "norm-corpus": (
        "each corpus standardised; live, the statistics adapt to the session",
        {"train": {"normalization": "corpus"}},
    ),
    "norm-speaker-cap": (
        "as norm-speaker, the session never weighing more than the prior (3,000 frames)",
        {"train": {"normalization": "speaker", "session_frames": 3000}},
    ),
    "norm-speaker-slow": (
        "as norm-speaker, the training statistics worth 15,000 frames (5 minutes) instead of 3,000",
        {"train": {"normalization": "speaker", "prior_frames": 15000}},
    ),
    "norm-corpus-fixed": (
        "as norm-corpus in training; live, the training statistics only (no adaptation)",
        {"train": {"normalization": "corpus", "prior_frames": 10**9}},
    ),
    "norm-corpus-cap": (
        "as norm-corpus, the session never weighing more than the prior (3,000 frames)",
        {"train": {"normalization": "corpus", "session_frames": 3000}},
    ),
}


def configure(base, name: str, protocols: tuple[str, ...], seed: int, cache: str):
    """The variant's Config: the study's base (the recipe with one head, the global
    normalisation, every file and no augmentation, whatever the recipe ships) with its
    changes, no perturbation rows."""
    from emomon.training.settings import TrainSettings

    changes = VARIANTS[name][1]
    cfg = replace(
        base,
        evaluation=replace(base.evaluation, protocols=protocols, perturbations=(), probe=True),
        augment=replace(base.augment, views=0),
        dataset=replace(base.dataset, exclude=()),
        regressor=replace(base.regressor, ensemble=1),
        train=replace(
            base.train, seed=seed, cache_dir=cache or base.train.cache_dir, normalization="global",
            prior_frames=TrainSettings().prior_frames, session_frames=0,
        ),
    )  # fmt: skip
    for tab, values in changes.items():
        if isinstance(values, dict):
            cfg = replace(cfg, **{tab: replace(getattr(cfg, tab), **values)})
    return cfg


def run_variant(name: str, cfg, console) -> dict:
    from emomon.model.encoder import load_encoder
    from emomon.training.datasets import load_corpora
    from emomon.training.experiment import run_protocol
    from emomon.training.features import Features
    from emomon.training.metrics import metrics_of_classes
    from emomon.training.progress import TrainingProgress
    from emomon.training.protocols import Protocol

    changes = VARIANTS[name][1]
    ds = load_corpora(cfg)
    if changes.get("unmasked"):
        ds.items = [replace(it, mask=None) for it in ds.items]
    encoder = load_encoder(cfg.encoder, cfg.runtime.device, cfg.runtime.dtype)
    feats = Features(ds, encoder, cfg, console)
    protocols = [Protocol.parse(p) for p in cfg.evaluation.protocols]
    rows = {}
    n_folds = sum(len(p.folds(replace(ds, items=feats.items))) for p in protocols)
    with TrainingProgress(console, n_folds, cfg.train.epochs) as progress:
        for p in protocols:
            scored, fits, norm = run_protocol(p, feats, cfg, progress, console)
            if norm.mode != "global" and p.kind == "cross":  # the trap: a caller who stays in one emotion
                (fold,) = p.folds(replace(ds, items=feats.items))
                items = [feats.items[i] for i in fold.test]
                one = feats.predict(fits[0], norm, fold.test, units=[f"{it.speaker}/{it.label}" for it in items])
                one_emotion = metrics_of_classes(one, items, ds.emotions, p.classes(ds), n_boot=0)["uar"]
                scored[p.name]["uar_one_emotion"] = one_emotion
            for evaluation, m in scored.items():
                rows[evaluation] = {
                    "uar": m["uar"], "ece": m["calibration"]["ece"], "n": m["n"],
                    **({"uar_one_emotion": m["uar_one_emotion"]} if "uar_one_emotion" in m else {}),
                    **({"probe_uar": m["probe"]["uar"]} if "probe" in m else {}),
                    **({"ece_calibrated": m["calibrated"]["ece"], "temperature": m["calibrated"]["temperature"]}
                       if "calibrated" in m else {}),
                }  # fmt: skip
                console.print(f"{name} {evaluation}: {rows[evaluation]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from emomon.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "training" / "experiments" / "default_v4.toml")
    ap.add_argument("--protocols", choices=list(PROTOCOLS), default="loco")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    study_args(ap, VARIANTS, ROOT)
    args = ap.parse_args(argv)
    base = load_config(args.config)
    console = Console(stderr=True)
    saved_file = args.out / "study_seven_corpora.json"
    runs = json.loads(saved_file.read_text())["runs"] if saved_file.exists() else []
    key = lambda r: (r["variant"], r["protocols"], r["seed"])  # noqa: E731
    for name in [] if args.table else args.only or VARIANTS:
        for seed in args.seeds:
            if not args.again and any(key(r) == (name, args.protocols, seed) for r in runs):
                continue
            t0 = time.perf_counter()
            cfg = configure(base, name, PROTOCOLS[args.protocols], seed, args.cache)
            rows = run_variant(name, cfg, console)
            runs[:] = [r for r in runs if key(r) != (name, args.protocols, seed)]
            runs.append(dict(
                variant=name, protocols=args.protocols, seed=seed, rows=rows,
                minutes=round((time.perf_counter() - t0) / 60, 1), cpu=cpu_name(), date=time.strftime("%Y-%m-%d"),
            ))  # fmt: skip
            args.out.mkdir(parents=True, exist_ok=True)
            saved_file.write_text(json.dumps({"runs": runs}, indent=1))
    for protocols in PROTOCOLS:
        body = summary_table([r for r in runs if r["protocols"] == protocols], protocols)
        if body:
            print(body)
            update_doc(args.doc, body, f"study_seven_corpora_{protocols}", f"Seven corpora: {protocols} study")
    return 0


def summary_table(runs: list[dict], protocols: str) -> str:
    """One row per variant: means over its saved seeds."""
    if not runs:
        return ""
    names = [n for n in VARIANTS if any(r["variant"] == n for r in runs)]
    from emomon.training.protocols import Protocol

    parts = [q for p in PROTOCOLS[protocols] for q in Protocol.parse(p).parts]
    short = {q.name: q.test_corpus + (f".{q.subset}" if q.subset else "") for q in parts}  # evaluation -> column
    cols = [("variant", "variant"), ("what", "what changes"), ("seeds", "seeds"), ("mean", "UAR mean"),
            ("low", "lowest")] + [(s, s) for s in short.values()] + [("ece", "ECE"), ("ece_t", "ECE, T fitted"),
            ("one", "one-emotion sessions")]  # fmt: skip
    rows = []
    for n in names:
        seeds = [r for r in runs if r["variant"] == n]
        mean = lambda f: statistics.mean(f(r) for r in seeds)  # noqa: E731
        per = {s: mean(lambda r, k=k: _row(r, k)["uar"]) for k, s in ((k, short[k]) for k in short)}
        cal = [v.get("ece_calibrated") for r in seeds for v in r["rows"].values()]
        rows.append(dict(
            variant=n, what=VARIANTS[n][0], seeds=len(seeds), mean=f"{statistics.mean(per.values()):.3f}",
            low=f"{min(per.values()):.3f}", **{s: f"{v:.3f}" for s, v in per.items()},
            ece=f"{statistics.mean(v['ece'] for r in seeds for v in r['rows'].values()):.3f}",
            ece_t=f"{statistics.mean(cal):.3f}" if all(c is not None for c in cal) else "-",
            one=f"{statistics.mean(one):.3f}" if (one := _all(seeds, "uar_one_emotion")) else "-",
        ))  # fmt: skip
    probed = [r for r in runs if r["variant"] == "base" and all("probe_uar" in v for v in r["rows"].values())]
    if probed:  # the probe does not depend on the head's settings: the base runs' own
        per = {s: statistics.mean(_row(r, k)["probe_uar"] for r in probed) for k, s in short.items()}
        rows.append(dict(
            variant="linear probe", what="logistic regression on mean-pooled frames (in the base runs)",
            seeds=len(probed), mean=f"{statistics.mean(per.values()):.3f}", low=f"{min(per.values()):.3f}",
            **{s: f"{v:.3f}" for s, v in per.items()}, ece="-", ece_t="-", one="-",
        ))  # fmt: skip
    cpus = sorted({r["cpu"] for r in runs})
    dates = sorted({r["date"] for r in runs})
    return (
        f"Run {', '.join(dates)} on {' and '.join(cpus)}: `python benchmarks/study_seven_corpora.py --protocols "
        f"{protocols}`. UAR per test corpus (ASED on its common sentences, BanglaSER on its main part), the mean "
        "over seeds; ECE of the top share before and after the temperature fitted on each fold's devel speakers; "
        "for the adapting normalisations, the mean UAR when every session is one speaker in one emotion "
        "(the caller who stays angry) instead of each speaker's files in order.\n\n" + table(rows, cols)
    )


def _all(runs: list[dict], key: str) -> list[float]:
    """`key` of every protocol row of `runs` that has it."""
    return [v[key] for r in runs for v in r["rows"].values() if key in v]


def _row(run: dict, evaluation: str) -> dict:
    """The saved row of an evaluation ("rest_to_emodb") in a run."""
    return run["rows"][evaluation]


if __name__ == "__main__":
    sys.exit(main())
