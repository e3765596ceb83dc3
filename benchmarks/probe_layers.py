"""Which of an encoder's layers carry emotion: a linear probe per hidden state.

    python benchmarks/probe_layers.py [--encoder openai/whisper-base] [--dtype float32]

Every file of Emo-DB, RAVDESS and nEMO is cut to its speech by the monitor's VAD (as
training does), encoded once with all hidden states, and mean-pooled over its frames per
layer. A class-balanced multinomial logistic regression (L2, standardised on the training
folds) is then trained leave-one-speaker-out on each corpus alone and across corpora
(6 shared classes for Emo-DB <-> RAVDESS; leave-one-corpus-out on the classes both sides
label), per layer, for the mean of layers 1..L, and for the concatenation of all. UAR.
Writes benchmarks/results/probe_layers.json and the probe_layers section of
docs/benchmarks.md. The pooled vectors are kept in --cache so a second run only fits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import table, update_doc  # noqa: E402
from emomon.model.audio import read_audio  # noqa: E402
from emomon.model.specs import EncoderSpec  # noqa: E402
from emomon.streamer.audio.segmenter import VadSettings  # noqa: E402
from emomon.streamer.audio.stream import speech_span  # noqa: E402
from emomon.training.datasets import load_dataset  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CORPORA = ("emodb", "ravdess", "nemo")
CROSS = [("emodb", "ravdess"), ("ravdess", "emodb"), (("emodb", "ravdess"), "nemo"),
         (("emodb", "nemo"), "ravdess"), (("ravdess", "nemo"), "emodb")]  # fmt: skip


def pooled_layers(corpus: str, encoder, cache: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """(files, K, D) mean-pooled hidden states, emotion names, speakers; cached as .npz."""
    ds = load_dataset(corpus, DATA / corpus)
    where = cache / f"{corpus}-{encoder.digest[:12]}-{encoder.compute}.npz"
    labels = [ds.emotions[it.label] for it in ds.items]
    speakers = [it.speaker for it in ds.items]
    if where.exists():
        return np.load(where)["x"], labels, speakers
    out, vad, t0 = [], VadSettings(), time.perf_counter()
    for i, it in enumerate(ds.items):
        audio = read_audio(it.path)
        a, b = speech_span(audio, vad)
        emb = encoder.encode([audio[a:b]])
        out.append(emb.segment(0).mean(1).numpy().astype(np.float32))  # (K, D)
        if i % 500 == 0:
            print(f"{corpus}: {i}/{len(ds.items)} files, {time.perf_counter() - t0:.0f} s", flush=True)
    x = np.stack(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(where, x=x)
    return x, labels, speakers


def fit_predict(xtr, ytr, xte, classes: int, c_reg: float = 1.0, iters: int = 200) -> np.ndarray:
    """Class-balanced multinomial logistic regression (L-BFGS) on standardised inputs; L2 as
    scikit-learn's with C = c_reg."""
    import torch

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a = torch.from_numpy((xtr - mu) / sd).double()
    b = torch.from_numpy((xte - mu) / sd).double()
    y = torch.from_numpy(ytr).long()
    counts = torch.bincount(y, minlength=classes).clamp(min=1).double()
    weight = counts.sum() / (classes * counts)
    w = torch.zeros(a.shape[1], classes, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + c, y, weight=weight) + (w**2).sum() / (2 * c_reg * len(a))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (b @ w + c).argmax(1).numpy()


def uar(y: np.ndarray, p: np.ndarray, classes: int) -> float:
    return float(np.mean([np.mean(p[y == k] == k) for k in range(classes) if (y == k).any()]))


def views(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer, the mean of layers 1..L, and all layers side by side: name -> (N, F)."""
    K = x.shape[1]
    out = {f"layer {k}": x[:, k] for k in range(K)}
    out[f"mean of 1-{K - 1}"] = x[:, 1:].mean(1)
    return out


def loso(x: np.ndarray, labels: list[str], speakers: list[str]) -> float:
    names = sorted(set(labels))
    y = np.array([names.index(e) for e in labels])
    spk = np.array(speakers)
    pred = np.zeros_like(y)
    for s in sorted(set(speakers)):
        te = spk == s
        pred[te] = fit_predict(x[~te], y[~te], x[te], len(names))
    return uar(y, pred, len(names))


def cross(train: list[tuple[np.ndarray, list[str]]], test: tuple[np.ndarray, list[str]]) -> float:
    shared = sorted(set().union(*[set(lab) for _, lab in train]) & set(test[1]))  # both sides label
    xs = np.concatenate([x[[e in shared for e in lab]] for x, lab in train])
    ys = np.array([shared.index(e) for _, lab in train for e in lab if e in shared])
    keep = [e in shared for e in test[1]]
    yt = np.array([shared.index(e) for e in test[1] if e in shared])
    return uar(yt, fit_predict(xs, ys, test[0][keep], len(shared)), len(shared))


def main(argv: list[str] | None = None) -> int:
    import torch

    from emomon.model.encoder import load_encoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="openai/whisper-base")
    ap.add_argument("--kind", default="whisper")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "emomon" / "probe")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    encoder = load_encoder(EncoderSpec(kind=args.kind, name=args.encoder, layer="weighted"), "cpu", args.dtype)
    data = {c: pooled_layers(c, encoder, args.cache) for c in CORPORA}
    rows = []
    for name in views(data["emodb"][0]):
        row = {"features": name}
        for c in CORPORA:
            x, labels, speakers = data[c]
            row[f"{c}_loso"] = round(loso(views(x)[name], labels, speakers), 3)
        for src, dst in CROSS:
            src = (src,) if isinstance(src, str) else src
            train = [(views(data[s][0])[name], data[s][1]) for s in src]
            row[f"{'_'.join(src)}_to_{dst}"] = round(cross(train, (views(data[dst][0])[name], data[dst][1])), 3)
        rows.append(row)
        print(row, flush=True)
    result = dict(date=time.strftime("%Y-%m-%d"), encoder=args.encoder, dtype=args.dtype, rows=rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe_layers.json").write_text(json.dumps(result, indent=1))
    cols = [("features", "mean-pooled features")] + [(k, k) for k in rows[0] if k != "features"]
    body = (
        f"Run {result['date']}. Command: `python benchmarks/probe_layers.py --encoder {args.encoder} "
        f"--dtype {args.dtype}`: one mean-pooled vector per VAD-trimmed file and hidden state, class-balanced "
        "logistic regression (L2), UAR; leave-one-speaker-out within a corpus; across corpora on the classes "
        "both sides label.\n\n" + table(rows, cols)
    )
    print(body)
    update_doc(args.doc, body, "probe_layers", "Which encoder layers carry emotion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
