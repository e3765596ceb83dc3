"""Where the test data lives (the repository, the bundled sample, the seven corpora) and
the helpers that read or arrange it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from emomon.model.audio import SAMPLE_RATE, read_audio

REPO = Path(__file__).resolve().parents[2]


SAMPLE = REPO / "streamer" / "samples" / "emodb_speaker11.wav"  # the bundled sample: six sentences, 1 s pauses


DATA = Path(os.environ.get("EMOMON_TEST_DATA") or REPO.parent / "shared" / "data")


EMODB = DATA / "emodb"


RAVDESS = DATA / "ravdess"


NEMO = DATA / "nemo"


ASED, BANGLASER = DATA / "ased", DATA / "banglaser"


EYASE, INDOWAVE = DATA / "eyase", DATA / "indowave"


EMOTIONS9 = (
    "Anger",
    "Boredom",
    "Calmness",
    "Concentration",
    "Determination",
    "Excitement",
    "Interest",
    "Sadness",
    "Tiredness",
)


def load_clip(name: str) -> np.ndarray:
    """An Emo-DB file as float32 mono 16 kHz."""
    return read_audio(EMODB / "wav" / name)


def mini_corpus(root: Path, source: Path, per_speaker: int, speakers: int, distinct: tuple[str, ...] = ()) -> Path:
    """A few real files of each of a corpus's first `speakers` speakers, with its labels.csv
    (absolute paths); with `distinct` columns, at most one file per speaker and value of them."""
    with (source / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    keep, count, seen = [], {}, set()
    for r in rows:
        spk, key = r["speaker"], (r["speaker"], *(r[c] for c in distinct))
        if (spk in count or len(count) < speakers) and count.get(spk, 0) < per_speaker and key not in seen:
            count[spk] = count.get(spk, 0) + 1
            if distinct:
                seen.add(key)
            keep.append({**r, "file": str(source / r["file"])})
    root.mkdir(parents=True)
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return root


# -- helpers the test modules share (one place: no test module imports another) ----------
def speech_sentence(name: str) -> np.ndarray:
    """An Emo-DB ("03a01Wa.wav") or nEMO ("SM0_anger_1.opus") sentence, its pauses trimmed."""
    from emomon.streamer.audio.stream import speech_span

    wav = read_audio(NEMO / "audio" / name.split("_")[0] / name) if name.endswith(".opus") else load_clip(name)
    a, b = speech_span(wav)
    return wav[a:b]


def make_compare23(root: Path, n_train: int = 16, n_devel: int = 8, n_test: int = 4) -> Path:
    """Real Emo-DB speech in the ComParE 2023 layout, with share labels that follow loudness
    (so that there is something to learn) and withheld test labels."""
    files = sorted(p.name for p in (EMODB / "wav").glob("*.wav"))[:: 535 // (n_train + n_devel + n_test)]
    (root / "wav").mkdir(parents=True)
    (root / "lab").mkdir()
    rng = np.random.default_rng(0)
    import soundfile as sf

    rows = []
    for i, name in enumerate(files[: n_train + n_devel + n_test]):
        audio = load_clip(name)[: int(1.2 * SAMPLE_RATE)]
        fname = f"{i:05d}.wav"
        sf.write(root / "wav" / fname, audio, SAMPLE_RATE)
        loud = float(np.sqrt(np.mean(audio**2)))
        shares = np.clip(rng.uniform(0, 0.3, 9) + loud * np.linspace(0, 3, 9), 0, 1)
        rows.append({"filename": fname, **{e: f"{v:.4f}" for e, v in zip(EMOTIONS9, shares)}})
    parts = {"train": rows[:n_train], "devel": rows[n_train : n_train + n_devel], "test": rows[n_train + n_devel :]}
    for split, part in parts.items():
        cols = ["filename"] if split == "test" else ["filename", *EMOTIONS9]
        with (root / "lab" / f"{split}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(part)
    return root
