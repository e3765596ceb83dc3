"""Which int8 for the ONNX export: layers, static or dynamic, smoothing; speed against agreement.

Each variant is the shipped default bundle, calibrated (model/quantise.py) on the same
168 clips of the seven corpora that `python -m emomon.training.calibrate` uses, exported
to int8, then timed (one 2 s Emo-DB segment per call, one thread) and compared with torch
float32 on every Emo-DB sentence (a fresh session each): the largest share difference
and how often the top emotion is the same.

    python benchmarks/study_int8.py            # updates docs/benchmarks.md ("int8 variants")
    python benchmarks/study_int8.py --quick    # 20 sentences, two variants: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_name, median_ms, result_args, table, update_doc  # noqa: E402
from emomon.model.audio import SAMPLE_RATE, read_audio  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FF = ("fc1", "fc2")
VARIANTS = [  # name, calibrated, smoothing alpha, layers
    ("feed-forward, dynamic (no calibration)", False, None, FF),
    ("feed-forward, static", True, None, FF),
    ("projections + feed-forward, static", True, None, None),
    ("projections + feed-forward, static, smoothed 0.5", True, 0.5, None),
    ("projections + feed-forward, static, smoothed 0.8 (shipped)", True, 0.8, None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    result_args(ap, "study_int8")
    args = ap.parse_args()
    import torch

    from emomon.model.bundle import DEFAULT_BUNDLE
    from emomon.model.export import export_bundle
    from emomon.model.onnx_engine import OnnxPredictor
    from emomon.model.predictor import Predictor
    from emomon.model.quantise import PROJECTIONS, RANGES, calibrate
    from emomon.training.calibrate import clips

    files = sorted((DATA / "emodb" / "wav").glob("*.wav"))[: 20 if args.quick else None]
    audio = [read_audio(f) for f in files]
    two_s = next(a for a in audio if len(a) >= 2 * SAMPLE_RATE)[: 2 * SAMPLE_RATE]
    speech = [read_audio(p)[: 10 * SAMPLE_RATE] for p in clips(DATA, 24)]
    torch.set_num_threads(2)
    ref = Predictor.from_bundle(None, "cpu", "float32")
    want = []
    for a in audio:
        ref.reset_session()
        want.append(np.array(list(ref.predict([a])[0].shares.values())))
    rows = []
    with tempfile.TemporaryDirectory(prefix="study-int8-") as tmp:
        os.environ["EMOMON_ONNX_CACHE"] = tmp
        for k, (name, calibrated, alpha, layers) in enumerate(VARIANTS[1:3] if args.quick else VARIANTS):
            bundle = Path(tmp) / f"bundle{k}"
            shutil.copytree(DEFAULT_BUNDLE, bundle)
            (bundle / RANGES).unlink(missing_ok=True)
            if calibrated:
                p = Predictor.from_bundle(bundle, "cpu", "float32")
                calibrate(p, speech, "study", alpha, layers or PROJECTIONS).write(bundle)
            info = export_bundle(bundle, Path(tmp) / f"v{k}.onnx", "int8")
            one = OnnxPredictor(info.path, "cpu", 1)
            ms = median_ms(lambda o=one: o.predict([two_s], update_session=False), 5 if args.quick else 30)
            two = OnnxPredictor(info.path, "cpu", 2)
            diffs, same = [], 0
            for a, w in zip(audio, want):
                two.reset_session()
                got = np.array(list(two.predict([a])[0].shares.values()))
                diffs.append(float(np.abs(got - w).max()))
                same += int(got.argmax() == w.argmax())
            row = {"variant": name, "ms (1 thread)": round(ms, 1), "max": f"{max(diffs):.3f}",
                   "p95": f"{np.percentile(diffs, 95):.4f}", "median": f"{np.median(diffs):.4f}",
                   "same top": f"{same / len(audio):.1%}", "batch-independent": two.batches}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    if args.quick:
        return
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu_name(), "rows": rows,
              "sentences": len(audio)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    body = (
        f"{result['cpu']}, {result['date'][:10]}; the shipped default model, int8 exports calibrated on 168 clips "
        f"of the seven corpora; speed: one 2 s Emo-DB segment per call on one thread (median of 30); agreement "
        f"with torch float32 over {len(audio)} Emo-DB sentences, each a fresh session. Goal: top emotion kept on "
        ">= 97 %.\n\n" + table(rows, [(k, k) for k in rows[0]])
    )
    update_doc(args.doc, body, "study_int8", "int8 variants of the ONNX export")


if __name__ == "__main__":
    main()
