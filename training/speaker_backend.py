"""Fit the speaker back-end (model/speaker_backend.py) on labelled corpora's voices.

Every file of the chosen corpora is embedded once with emomon's speaker encoder (cached as
`<corpus>.npz` under ~/.cache/emomon/speaker_study, or $XDG_CACHE_HOME), then centring and
NAP are fitted on all of their speakers. The shipped back-end is fitted on the four
corpora `benchmarks/bench_speakers.py` never uses (ASED, BanglaSER, EYASE, IndoWave:
130 speakers in four languages, each in several emotions), so that the benchmark's
conversations of Emo-DB, RAVDESS and nEMO speakers are voices the back-end never heard.
k = 10 was chosen on tune speakers by benchmarks/study_speaker_backend.py.

    python -m emomon.training.speaker_backend --out model/speaker_backend
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from ..model.speaker_backend import DEFAULT_FOLDER, fit_nap, save_backend

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIT_CORPORA = ("ased", "banglaser", "eyase", "indowave")
K = 10


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emomon" / "speaker_study"


def corpus_embeddings(
    corpus: str, data: Path = DATA, limit: int | None = None, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 256) raw GE2E embeddings of the corpus's labelled files and their speakers
    ("corpus:speaker"); `limit`: only the first files of every speaker."""
    root = root or cache_root()
    path = root / f"{corpus}{'' if limit is None else f'-{limit}'}.npz"
    if path.exists():
        z = np.load(path)
        return z["emb"], z["speaker"]
    from ..model.audio import read_audio
    from ..model.speaker import SpeakerEncoder

    with (data / corpus / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for r in rows:
            seen[r["speaker"]] = seen.get(r["speaker"], 0) + 1
            if seen[r["speaker"]] <= limit:
                kept.append(r)
        rows = kept
    enc = SpeakerEncoder()
    files = [data / corpus / r["file"] for r in rows]
    embs = [enc.embed([read_audio(f) for f in files[i : i + 32]]) for i in range(0, len(files), 32)]
    emb, speaker = np.concatenate(embs), np.array([f"{corpus}:{r['speaker']}" for r in rows])
    root.mkdir(parents=True, exist_ok=True)
    np.savez(path, emb=emb, speaker=speaker)
    return emb, speaker


def fit(corpora: tuple[str, ...] = FIT_CORPORA, k: int = K, data: Path = DATA, limit: int | None = None):
    """The back-end fitted on every speaker of `corpora`."""
    parts = [corpus_embeddings(c, data, limit) for c in corpora]
    x = np.concatenate([e for e, _ in parts])
    y = np.concatenate([s for _, s in parts])
    info = {"fitted_on": {"corpora": list(corpora), "speakers": len(set(y)), "files": len(y)}}
    return fit_nap(x, y, k, info)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default=",".join(FIT_CORPORA), help="comma-separated corpora under --data")
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the corpora")
    ap.add_argument("--k", type=int, default=K, help="within-speaker directions projected out")
    ap.add_argument("--limit", type=int, help="only the first files of every speaker (a quick check)")
    ap.add_argument("--out", type=Path, default=DEFAULT_FOLDER, help="back-end folder to write")
    args = ap.parse_args(argv)
    backend = fit(tuple(c for c in args.corpora.split(",") if c), args.k, args.data, args.limit)
    folder = save_backend(backend, args.out)
    print(f"speaker back-end ({backend.info['fitted_on']}) written to {folder}")


if __name__ == "__main__":
    main()
