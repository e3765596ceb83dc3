"""Do a corpus's words give its emotions away? A check by alignment distances in sound.

    python benchmarks/lexical_confound.py [--corpora ased banglaser eyase indowave nemo] [--per-speaker 30]

Whisper hears words. Where every speaker says the same sentences in every emotion (nEMO's
sentence list, RAVDESS, Emo-DB, ASED's two common sentences, BanglaSER's main part) the
words carry no label; where a sentence is spoken in one emotion only (ASED's other
sentences, BanglaSER's extended part), recognising the sentence recognises the emotion.
For corpora whose text is not listed (EYASE, IndoWave) this measures it, within each
speaker, by dynamic time warping of MFCCs (the alignment follows the words; cepstral means
removed per file, so channel and voice count little): for every file, the distance to
its nearest file of the same emotion (another take of the same sentence, where takes are
repeated) and to its nearest file of another emotion. When the other emotions' files say
the same words, the second distance is close to the first (only the delivery differs);
when every emotion has its own sentences it is as far as two different sentences are.
The median ratio (other / same) is reported beside the share of files whose nearest
neighbour overall has the same emotion. ASED's two parts calibrate the scale: `common`
(same words in every emotion) and `emotion_specific` (the words give the emotion).
Results: benchmarks/results/lexical_confound.json and the lexical_confound section of
docs/training.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_name, table, update_doc  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SUBSET = {"ased": "text_kind", "banglaser": "part"}


def mfcc(x: np.ndarray, sr: int = 16000, n_mels: int = 40, n_ceps: int = 13) -> np.ndarray:
    """(frames, n_ceps) MFCCs at 100 Hz (25 ms Hann windows), cepstral mean removed."""
    win, hop, nfft = 400, 160, 512
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2  # (T, 257)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(60), mel(7600), n_mels + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(nfft, 1 / sr)
    fb = np.maximum(0, np.minimum((bins - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                                  (edges[2:, None] - bins) / (edges[2:, None] - edges[1:-1, None])))  # fmt: skip
    logmel = np.log(power @ fb.T + 1e-8)
    k = np.arange(n_mels)
    dct = np.cos(np.pi / n_mels * (k[None, :] + 0.5) * np.arange(1, n_ceps + 1)[:, None])  # drop c0 (level)
    c = logmel @ dct.T
    return (c - c.mean(0)).astype(np.float32)


def dtw(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean frame distance along the best monotonic alignment (anti-diagonals at once)."""
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # (n, m)
    n, m = cost.shape
    D = np.full((n + 1, m + 1), np.inf)
    D[0, 0] = 0.0
    for s in range(2, n + m + 1):  # cells i + j = s (1-based)
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        D[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(D[i - 1, j], D[i, j - 1]), D[i - 1, j - 1])
    return float(D[n, m] / (n + m))


def check(corpus: str, per_speaker: int, rng: np.random.Generator) -> dict[str, dict]:
    from emomon.model.audio import read_audio
    from emomon.streamer.audio.stream import speech_span

    root = DATA / corpus
    with (root / "labels.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["emotion"] != "disappointment"]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get(SUBSET.get(corpus, ""), "") or "all", r["speaker"])].append(r)
    out: dict[str, list[float]] = defaultdict(list)
    for (subset, _speaker), files in sorted(groups.items()):
        if len({r["emotion"] for r in files}) < 2:
            continue
        if len(files) > per_speaker:
            files = [files[i] for i in sorted(rng.choice(len(files), per_speaker, replace=False))]
        feats = []
        for r in files:
            a = read_audio(root / r["file"])
            s, e = speech_span(a)
            feats.append(mfcc(a[s:e])[::2])  # 50 Hz is enough to follow words
        d = np.full((len(files), len(files)), np.inf)
        for i in range(len(files)):
            for j in range(i + 1, len(files)):
                d[i, j] = d[j, i] = dtw(feats[i], feats[j])
        nearest = d.argmin(1)
        out[subset] += [float(files[i]["emotion"] == files[k]["emotion"]) for i, k in enumerate(nearest)]
        emotion = np.array([r["emotion"] for r in files])
        same = np.where(emotion[:, None] == emotion[None, :], d, np.inf).min(1)
        other = np.where(emotion[:, None] != emotion[None, :], d, np.inf).min(1)
        ok = np.isfinite(same) & np.isfinite(other)
        out[subset + "/ratio"] += (other[ok] / same[ok]).tolist()
        # what chance would give: the share of a file's other files that share its emotion
        out[subset + "/chance"] += [
            (sum(g["emotion"] == f["emotion"] for g in files) - 1) / (len(files) - 1) for f in files
        ]
    return {
        s: {"files": len(v), "same_emotion": round(float(np.mean(v)), 3),
            "chance": round(float(np.mean(out[s + "/chance"])), 3),
            "ratio": round(float(np.median(out[s + "/ratio"])), 3)}
        for s, v in out.items() if "/" not in s
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", nargs="+", default=["ased", "banglaser", "eyase", "indowave", "nemo"])
    ap.add_argument("--per-speaker", type=int, default=30, help="files per speaker at most (drawn at random)")
    ap.add_argument("--table", action="store_true", help="only rewrite the doc section from the saved results")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "training.md")
    args = ap.parse_args(argv)
    saved_file = args.out / "lexical_confound.json"
    if args.table:
        saved = json.loads(saved_file.read_text())
    else:
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        results = {c: check(c, args.per_speaker, rng) for c in args.corpora}
        saved = dict(results=results, per_speaker=args.per_speaker, cpu=cpu_name(), date=time.strftime("%Y-%m-%d"),
                     minutes=round((time.perf_counter() - t0) / 60, 1))  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        saved_file.write_text(json.dumps(saved, indent=1))
    rows = [
        dict(corpus=c, subset=s, files=v["files"], same=f"{v['same_emotion']:.3f}", chance=f"{v['chance']:.3f}",
             ratio=f"{v['ratio']:.3f}")
        for c, subsets in saved["results"].items() for s, v in subsets.items()
    ]  # fmt: skip
    cols = [("corpus", "corpus"), ("subset", "subset"), ("files", "files"), ("same", "nearest has the same emotion"),
            ("chance", "chance"), ("ratio", "other / same emotion distance")]  # fmt: skip
    body = (
        f"Run {saved['date']} on {saved['cpu']}: `python benchmarks/lexical_confound.py` (at most "
        f"{saved['per_speaker']} files per speaker). Within each speaker, how often a file's nearest other file by "
        "DTW of MFCCs has the same emotion, against the share of that speaker's other files that do (chance); "
        "and the median over files of (distance to the nearest file of another emotion) / (distance to the "
        "nearest file of the same emotion): near 1 when other emotions say the same words.\n\n" + table(rows, cols)
    )
    print(body)
    update_doc(args.doc, body, "lexical_confound", "Do the words give the emotion away?")
    return 0


if __name__ == "__main__":
    sys.exit(main())
