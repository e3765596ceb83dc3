"""Default-model cost: model time per speech segment on ONE CPU core, and the bundle's size.

The issue's budget: at most 60 ms of model time (encoder + regressors) per 2 s segment on
one core, and a bundle of at most 5 MB. Real Emo-DB speech through `Predictor.predict`,
one segment per call as the live monitor mostly runs it, pinned to one core with one
torch thread.

    python benchmarks/bench_default_model.py            # updates docs/benchmarks.md
    python benchmarks/bench_default_model.py --quick    # a few repeats; checks the script

Writes benchmarks/results/bench_default_model.json (and the _quick variant).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import table, update_doc  # noqa: E402

GOAL_MS_PER_2S = 60.0
GOAL_BUNDLE_BYTES = 5_000_000
SECONDS = (1.0, 2.0, 4.0)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import opensmile

    from emomon.model.audio import SAMPLE_RATE, read_audio
    from emomon.model.bundle import DEFAULT_BUNDLE
    from emomon.model.predictor import Predictor

    predictor = Predictor.from_bundle(DEFAULT_BUNDLE, device="cpu")
    # The descriptors as opensmile's own wrapper computes them (the whole configuration, functionals
    # included, a new instance per signal): what the encoder cost before model/smile.py.
    wrapper = opensmile.Smile(
        feature_set=opensmile.FeatureSet.ComParE_2016, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    speech = np.concatenate([read_audio(p) for p in sorted((ROOT.parent / "shared/data/emodb/wav").glob("03a0*.wav"))])
    repeats = 3 if args.quick else 30
    rows = []
    for seconds in SECONDS:
        segment = speech[: int(seconds * SAMPLE_RATE)]
        predictor.predict([segment])  # warm-up
        times, enc, reg, wrapped = [], [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            (p,) = predictor.predict([segment])
            times.append((time.perf_counter() - t) * 1e3)
            enc.append(p.encoder_ms)
            reg.append(p.regressor_ms)
            t = time.perf_counter()
            wrapper.process_signal(segment, SAMPLE_RATE)
            wrapped.append((time.perf_counter() - t) * 1e3)
        rows.append({
            "segment_s": seconds, "total_ms": round(statistics.median(times), 1),
            "encoder_ms": round(statistics.median(enc), 1), "regressor_ms": round(statistics.median(reg), 1),
            "wrapper_ms": round(statistics.median(wrapped), 1),
            "rtf": round(statistics.median(times) / 1e3 / seconds, 4),
        })  # fmt: skip
    size = sum(f.stat().st_size for f in DEFAULT_BUNDLE.iterdir())
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"), "cpu": cpu_name(), "threads": 1, "repeats": repeats,
        "bundle": str(DEFAULT_BUNDLE.relative_to(ROOT)), "bundle_bytes": size, "rows": rows,
    }  # fmt: skip
    two = next(r for r in rows if r["segment_s"] == 2.0)
    verdict = (
        f"2 s segment: {two['total_ms']} ms on one core (goal <= {GOAL_MS_PER_2S:.0f} ms: "
        f"{'met' if two['total_ms'] <= GOAL_MS_PER_2S else 'NOT met'}); bundle {size / 1e6:.2f} MB "
        f"(goal <= 5 MB: {'met' if size <= GOAL_BUNDLE_BYTES else 'NOT met'})."
    )
    body = (
        f"{result['date']}, {result['cpu']}, one core, one torch thread, median of {repeats} calls of "
        "`Predictor.predict` on one real Emo-DB segment:\n\n"
        + table(
            rows,
            [
                ("segment_s", "segment (s)"),
                ("total_ms", "total (ms)"),
                ("encoder_ms", "encoder (ms)"),
                ("regressor_ms", "regressors (ms)"),
                ("rtf", "real-time factor"),
                ("wrapper_ms", "opensmile.Smile (ms)"),
            ],
        )  # fmt: skip
        + "\nThe encoder runs openSMILE's ComParE descriptors through its SMILEapi without the functionals "
        "(model/smile.py); the last column times the same descriptors through `opensmile.Smile.process_signal`, "
        "the way the encoder computed them before, in the same run.\n" + f"\n{verdict}\n"
    )
    print(body)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_default_model_quick.json" if args.quick else "bench_default_model.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    if not args.quick:
        update_doc(args.doc, body, "bench_default_model", "Default model cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
