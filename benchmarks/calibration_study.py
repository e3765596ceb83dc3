"""Can one temperature calibrate the default's shares both within a corpus and across?

    python benchmarks/calibration_study.py [--config training/experiments/default_whisper_base.toml]

The default's top share is well calibrated on speakers of the corpora it learned from
(ECE 0.06-0.11) and over-confident on a corpus it never heard (ECE up to 0.28). The usual
remedy is temperature scaling: shares p -> p^(1/T), renormalised, with T fitted by
log-likelihood on held-out data. This study trains the recipe's cross-corpus protocols
(one fit each, emomon's loop and features: training/experiment.py) and scores, on the
in-domain devel speakers and on the unseen test corpus, the shares at T = 1, at the T
fitted on the devel speakers (what a recipe can do without the test corpus), and at the
T that would suit the test corpus best (an oracle, for what any single temperature could
reach). The arg-max, and so the UAR, does not change with T. Writes
benchmarks/results/calibration_study.json and the calibration_study section of
docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_name, table, update_doc  # noqa: E402

GRID = np.round(np.arange(0.5, 4.01, 0.05), 2)


def tempered(shares: np.ndarray, t: float) -> np.ndarray:
    """Shares at temperature t: p^(1/t), renormalised over each row."""
    logp = np.log(np.clip(shares, 1e-12, None)) / t
    p = np.exp(logp - logp.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def nll(shares: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(shares[np.arange(len(labels)), labels], 1e-12, None))))


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from emomon.model.encoder import load_encoder
    from emomon.streamer.config import load_config
    from emomon.training.experiment import Features, fit_normalised, load_corpora, pooled_predict, score_classes
    from emomon.training.metrics import calibration
    from emomon.training.protocols import Protocol

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "training" / "experiments" / "default_whisper_base.toml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "training.md")
    ap.add_argument("--table", action="store_true", help="only rewrite the table from the saved results")
    args = ap.parse_args(argv)
    saved = args.out / "calibration_study.json"
    if args.table:
        write_table(json.loads(saved.read_text()), args.doc)
        return 0
    cfg = load_config(args.config)
    cfg = replace(cfg, evaluation=replace(cfg.evaluation, perturbations=()))
    console = Console(stderr=True)
    ds = load_corpora(cfg)
    feats = Features(ds, load_encoder(cfg.encoder, cfg.runtime.device, cfg.runtime.dtype), cfg, console)
    if not feats.pools:
        raise SystemExit("This study needs a recipe whose fits pool once (Architecture 3, one layer, global).")
    rows = []
    for text in cfg.evaluation.protocols:
        protocol = Protocol.parse(text)
        if protocol.kind != "cross":
            continue
        t0 = time.perf_counter()
        (fold,) = protocol.folds(replace(ds, items=feats.items))
        classes = protocol.classes(ds)
        r, norm = fit_normalised(cfg, ds.emotions, feats.split(fold.train, augmented=True), feats.split(fold.devel))
        parts = {}
        for part, idx in (("devel", fold.devel), ("test", fold.test)):
            idx = np.array([i for i in idx if feats.items[i].label in classes])  # devel: the scored emotions only
            items = [feats.items[i] for i in idx]
            shares = pooled_predict(r, norm, feats.pooled[0, idx])
            sub = shares[:, classes] / shares[:, classes].sum(1, keepdims=True)
            labels = np.array([classes.index(it.label) for it in items])
            parts[part] = (shares, sub, labels, items)
        # T fitted on the devel speakers, over the classes the protocol scores
        _, dev_sub, dev_labels, _ = parts["devel"]
        t_devel = float(GRID[np.argmin([nll(tempered(dev_sub, t), dev_labels) for t in GRID])])
        _, test_sub, test_labels, _ = parts["test"]
        t_oracle = float(GRID[np.argmin([calibration(tempered(test_sub, t), test_labels)["ece"] for t in GRID])])
        row = dict(protocol=protocol.name, t_devel=t_devel, t_oracle=t_oracle)
        for part, (_, sub, labels, _) in parts.items():
            for name, t in (("1", 1.0), ("devel", t_devel), ("oracle", t_oracle)):
                row[f"{part}_ece_t{name}"] = round(calibration(tempered(sub, t), labels)["ece"], 3)
        uar = score_classes(parts["test"][0], parts["test"][3], ds.emotions, classes, n_boot=0)["uar"]
        row["uar"] = round(uar, 3)
        row["minutes"] = round((time.perf_counter() - t0) / 60, 1)
        console.print(row)
        rows.append(row)
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "config": str(args.config), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=1))
    write_table(result, args.doc)
    return 0


def write_table(result: dict, doc: Path) -> None:
    cols = [("protocol", "protocol"), ("uar", "test UAR"), ("t_devel", "T fitted on devel"),
            ("t_oracle", "T best for test"), ("devel_ece_t1", "devel ECE, T = 1"),
            ("devel_ece_tdevel", "devel ECE, devel T"), ("devel_ece_toracle", "devel ECE, test's T"),
            ("test_ece_t1", "test ECE, T = 1"), ("test_ece_tdevel", "test ECE, devel T"),
            ("test_ece_toracle", "test ECE, test's T")]  # fmt: skip
    rows = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in result["rows"]]
    body = (
        f"Run {result['date']} on {result['cpu']}. Command: `python benchmarks/calibration_study.py`: each "
        "cross-corpus protocol of the default's recipe trained once (seed 0); the expected calibration error of "
        "the top share on the training corpora's devel speakers and on the unseen test corpus, at T = 1, at the "
        "T fitted on the devel speakers by log-likelihood, and at the single T best for the test corpus.\n\n"
        + table(rows, cols)
    )
    print(body)
    update_doc(doc, body, "calibration_study", "Temperature and calibration across corpora")


if __name__ == "__main__":
    sys.exit(main())
