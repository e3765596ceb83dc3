"""Calibrate a bundle's static int8 export on speech from the corpora.

    python -m emomon.training.calibrate model/default --data ../shared/data --per-corpus 24

A static int8 export (model/quantise.py) quantises each encoder layer's projections with
fixed activation scales, so that a segment's result does not depend on the segments it
shares a graph call with. The calibration first equalises the LayerNorm outputs'
channels (SmoothQuant), then takes the smallest and largest input each layer sees over
this speech: `--per-corpus` clips drawn (seeded) from every corpus under `--data` (each
with a `labels.csv` whose `file` column names its clips), each cut to at most
`--max-s` seconds as the VAD would, run alone through the bundle's encoder in float32.
The ranges go into the bundle as `int8_ranges.json`; the export cache key changes with
them, so the next int8 export is redone.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def clips(data: Path, per_corpus: int, seed: int = 0) -> list[Path]:
    """`per_corpus` clips of every corpus under `data`, drawn with a fixed seed."""
    out: list[Path] = []
    for labels in sorted(data.glob("*/labels.csv")):
        with labels.open(newline="") as f:
            files = sorted(row["file"] for row in csv.DictReader(f))
        rng = np.random.default_rng([seed, len(out)])
        picked = rng.choice(len(files), size=min(per_corpus, len(files)), replace=False)
        out += [labels.parent / files[i] for i in sorted(picked)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emomon.training.calibrate", description=__doc__.split("\n")[1])
    ap.add_argument("bundle", type=Path, help="the bundle folder to calibrate")
    ap.add_argument("--data", type=Path, required=True, help="a folder of corpora, each with a labels.csv")
    ap.add_argument("--per-corpus", type=int, default=24, help="clips per corpus (24)")
    ap.add_argument("--max-s", type=float, default=10.0, help="longest segment in seconds ([vad] max_segment_s)")
    args = ap.parse_args(argv)

    from ..model.audio import SAMPLE_RATE, read_audio
    from ..model.errors import EmomonError
    from ..model.predictor import Predictor
    from ..model.quantise import calibrate

    try:
        paths = clips(args.data, args.per_corpus)
        if not paths:
            raise EmomonError(f"No corpus with a labels.csv is under '{args.data}'.")
        predictor = Predictor.from_bundle(args.bundle, device="cpu", dtype="float32")
        segments = [read_audio(p)[: int(args.max_s * SAMPLE_RATE)] for p in paths]
        corpora = sorted({q.relative_to(args.data).parts[0] for q in paths})
        source = f"{len(paths)} clips, up to {args.per_corpus} from each of {len(corpora)} corpora: "
        source += ", ".join(corpora)
        calibration = calibrate(predictor, segments, source)
        path = calibration.write(args.bundle)
    except EmomonError as e:
        print(f"calibrate: {e}", file=sys.stderr)
        return 1
    print(f"{path}: {len(calibration.inputs)} layers from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
