"""Speaker back-ends on GE2E embeddings (issue 28, step 1): what a back-end learned from the
seven corpora's voices does for voices it never heard.

Every labelled file of the seven corpora is embedded once with emomon's speaker encoder
(Resemblyzer's GE2E, model/speaker.py: one L2-normed 256-d utterance embedding per file;
cached under ~/.cache/emomon/speaker_study). Speakers are split three ways: Emo-DB and
RAVDESS are never trained on (their speakers are test speakers of corpora the back-end
never saw, the issue's goals); in the other five corpora every fifth speaker is a tune
speaker (hyper-parameters are chosen there), every fifth from the third a test speaker,
the rest train. Trials: every pair of files of one corpus's test speakers; the number is
the equal error rate of same-speaker against different-speaker pairs (lower is better).

Back-ends (fitted on the train speakers, their one setting chosen on the tune speakers):
- cosine: the raw embeddings (what the tracker uses today);
- centred: minus the corpus's mean embedding (unsupervised: a live session can take
  the mean of what it has heard);
- centred + NAP: then the top-k directions of within-speaker scatter projected out
  (nuisance attribute projection; within-speaker variation here is mostly emotion);
- centred + LDA + PLDA: LDA to k dimensions, length normalisation, two-covariance PLDA;
- centred + AAM projection: a linear map to 128 dimensions trained with an additive
  angular margin softmax over the train speakers (scale 30, margin 0.2), cosine scoring.

    python benchmarks/study_speaker_backend.py            # all corpora; docs/benchmarks.md
    python benchmarks/study_speaker_backend.py --quick    # two corpora, few files: checks the script
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

from benchmarks.report import cpu_name, result_args, table, update_doc  # noqa: E402
from emomon.model.speaker_backend import unit_rows as unit  # noqa: E402
from emomon.model.speaker_backend import within_directions  # noqa: E402
from emomon.training.speaker_backend import corpus_embeddings  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CORPORA = ("emodb", "ravdess", "nemo", "ased", "banglaser", "eyase", "indowave")
UNSEEN = ("emodb", "ravdess")  # never trained on
GOALS = {"emodb": 0.12, "ravdess": 0.14}


def split(speakers: np.ndarray, corpus: str) -> dict[str, str]:
    """Each speaker's role: train, tune or test (all test in the unseen corpora)."""
    ordered = sorted(set(speakers))
    if corpus in UNSEEN:
        return {s: "test" for s in ordered}
    return {s: ("tune" if i % 5 == 0 else "test" if i % 5 == 2 else "train") for i, s in enumerate(ordered)}


def eer(x: np.ndarray, speakers: np.ndarray, score) -> float:
    """Equal error rate over every pair of rows of x."""
    s = score(x, x)
    iu = np.triu_indices(len(x), 1)
    same = (speakers[:, None] == speakers[None, :])[iu]
    order = np.argsort(-s[iu])
    hits = same[order]
    miss = 1 - np.cumsum(hits) / max(hits.sum(), 1)
    false = np.cumsum(~hits) / max((~hits).sum(), 1)
    i = int(np.argmin(np.abs(miss - false)))
    return float((miss[i] + false[i]) / 2)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return unit(a) @ unit(b).T


def lda(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.linalg import eigh

    mu = x.mean(0)
    xc = x - mu
    sw, sb = np.zeros((x.shape[1],) * 2), np.zeros((x.shape[1],) * 2)
    for s in np.unique(y):
        z = xc[y == s]
        m = z.mean(0)
        sw += (z - m).T @ (z - m)
        sb += len(z) * np.outer(m, m)
    sw = sw / len(x) + 1e-6 * np.eye(len(sw))
    _, v = eigh(sb / len(x), sw)
    return mu, v[:, ::-1][:, :k]


class Plda:
    """Two-covariance PLDA: log-likelihood ratio of 'same speaker' for every pair."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.mu = x.mean(0)
        xc = x - self.mu
        d = x.shape[1]
        means = np.array([xc[y == s].mean(0) for s in np.unique(y)])
        within = sum((xc[y == s] - xc[y == s].mean(0)).T @ (xc[y == s] - xc[y == s].mean(0)) for s in np.unique(y))
        b, w = means.T @ means / len(means) + 1e-6 * np.eye(d), within / len(x) + 1e-6 * np.eye(d)
        t = b + w
        joint = np.linalg.inv(np.block([[t, b], [b, t]]))
        self.q = np.linalg.inv(t) - joint[:d, :d]
        self.p = joint[:d, d:]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a - self.mu, b - self.mu
        qa = 0.5 * np.einsum("ij,jk,ik->i", a, self.q, a)
        qb = 0.5 * np.einsum("ij,jk,ik->i", b, self.q, b)
        return qa[:, None] + qb[None, :] - a @ self.p @ b.T


def aam_projection(x: np.ndarray, y: np.ndarray, epochs: int, dim: int = 128, seed: int = 0):
    """A linear map trained with an additive angular margin softmax over the speakers."""
    import torch

    torch.manual_seed(seed)
    names = {s: i for i, s in enumerate(np.unique(y))}
    target = torch.tensor([names[s] for s in y])
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(x.shape[1], dim))
    centres = torch.nn.Parameter(torch.randn(len(names), dim) * 0.01)
    opt = torch.optim.Adam([*net.parameters(), centres], lr=1e-3, weight_decay=1e-2)
    data = torch.tensor(x, dtype=torch.float32)
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for i in range(0, len(data), 256):
            idx = order[i : i + 256]
            cos = torch.nn.functional.normalize(net(data[idx]), dim=1) @ torch.nn.functional.normalize(centres, dim=1).T
            hit = torch.nn.functional.one_hot(target[idx], len(names)).bool()
            loss = torch.nn.functional.cross_entropy(30 * torch.where(hit, cos - 0.2, cos), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    weight = net[1].weight.detach().numpy().T.astype(np.float64)
    bias = net[1].bias.detach().numpy().astype(np.float64)
    return lambda z: z @ weight + bias


def study(quick: bool) -> dict:
    corpora = CORPORA[:3] if quick else CORPORA
    raw = {c: corpus_embeddings(c, DATA, 6 if quick else None) for c in corpora}
    centred = {c: unit(e) - unit(e).mean(0) for c, (e, _) in raw.items()}
    role = {c: split(s, c) for c, (_, s) in raw.items()}

    def part(which: str, data: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for c, (_, s) in raw.items():
            keep = np.array([role[c][x] == which for x in s])
            if len(set(s[keep])) >= 2:  # an equal error rate needs two speakers
                out[c] = (data[c][keep], s[keep])
        return out

    train = part("train", centred)
    xtr = np.concatenate([x for x, _ in train.values()])
    ytr = np.concatenate([y for _, y in train.values()])
    tune, test = part("tune", centred), part("test", centred)
    raw_test = part("test", {c: e for c, (e, _) in raw.items()})

    def mean_eer(groups: dict, transform, score=cosine) -> float:
        return float(np.mean([eer(transform(x), y, score) for x, y in groups.values()]))

    directions = within_directions(xtr, ytr)

    def nap(k: int):
        keep = np.eye(xtr.shape[1]) - directions[:, :k] @ directions[:, :k].T
        return lambda x: x @ keep

    ks = [2, 5, 10, 20]
    k_nap = min(ks, key=lambda k: mean_eer(tune, nap(k)))
    dims = [32, 64, 100] if not quick else [8]
    fits = {k: lda(xtr, ytr, k) for k in dims}

    def lda_plda(k: int):
        mu, v = fits[k]
        project = lambda x: unit((x - mu) @ v)  # noqa: E731
        return project, Plda(project(xtr), ytr)

    k_lda = min(dims, key=lambda k: mean_eer(tune, lda_plda(k)[0], lda_plda(k)[1]))
    project, plda = lda_plda(k_lda)
    epochs = [5, 10, 20] if not quick else [2]
    maps = {e: aam_projection(xtr, ytr, e) for e in epochs}
    e_aam = min(epochs, key=lambda e: mean_eer(tune, maps[e]))
    backends = {
        "cosine (today)": (raw_test, lambda x: x, cosine),
        "centred": (test, lambda x: x, cosine),
        f"centred + NAP (k={k_nap})": (test, nap(k_nap), cosine),
        f"centred + LDA ({k_lda}) + PLDA": (test, project, plda),
        f"centred + AAM projection ({e_aam} epochs)": (test, maps[e_aam], cosine),
    }
    rows = []
    for name, (groups, transform, score) in backends.items():
        row = {"back-end": name}
        for c, (x, y) in groups.items():
            row[c] = round(eer(transform(x), y, score), 3)
        rows.append(row)
        print(row, flush=True)
    return {
        "rows": rows,
        "speakers": {c: {r: list(role[c].values()).count(r) for r in ("train", "tune", "test")} for c in raw},
        "files": {c: len(s) for c, (_, s) in raw.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    result_args(ap, "study_speaker_backend")
    args = ap.parse_args()
    t = time.time()
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), **study(args.quick)}
    result["seconds"] = round(time.time() - t)
    if args.quick:
        return
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    corpora = [c for c in CORPORA if c in result["rows"][0]]
    body = (
        f"Run {result['date']}: `python benchmarks/study_speaker_backend.py`. Equal error rate between "
        "files of each corpus's test speakers (lower is better); Emo-DB and RAVDESS were never trained on "
        f"(goals: Emo-DB <= {GOALS['emodb']:.0%}, RAVDESS <= {GOALS['ravdess']:.0%}). Speakers (train/tune/test): "
        + ", ".join(f"{c} {s['train']}/{s['tune']}/{s['test']}" for c, s in result["speakers"].items())
        + ". Each back-end's one setting was chosen on the tune speakers.\n\n"
        + table(result["rows"], [("back-end", "back-end")] + [(c, c) for c in corpora])
    )
    update_doc(args.doc, body, "study_speaker_backend", "Speaker back-ends on GE2E embeddings")


if __name__ == "__main__":
    main()
