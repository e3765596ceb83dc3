"""ONNX Runtime against torch on the shipped default model, in one run on one machine.

Speed: milliseconds per 2 s segment of real speech (an Emo-DB sentence cut to 2 s), one
segment per call (and eight streams' segments in one call, the static int8 export's
batch), on one core and on two, for torch in float32, int8 and bfloat16 (where
this CPU has fast bf16) and for the exported graph in float32 and int8 (taken from the ONNX
cache, or exported into it first, as `engine = "onnx"` does).
Agreement: every Emo-DB sentence (a fresh session each, as a new speaker) through torch
float32 and the exported float32 and int8 graphs (and torch's own int8, for comparison):
the largest share difference and how often the top emotion is the same.

    python benchmarks/bench_onnx.py            # full run, updates docs/benchmarks.md
    python benchmarks/bench_onnx.py --quick    # 20 sentences, few repeats: checks the script
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_onnx.py \
        --out benchmarks/results/bench_onnx_imitated.json   # torch as on an AVX2-only CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_name, median_ms, result_args, table, update_doc  # noqa: E402
from emomon.model.audio import SAMPLE_RATE, read_audio  # noqa: E402

GOAL_MS_ONE_CORE = 20.0  # per 2 s segment, one core, int8, an AVX2-only CPU (issue 42)
GOAL_F32 = 1e-4
GOAL_INT8 = 0.01
GOAL_TOP = 0.97
DATA = ROOT.parent / "shared" / "data" / "emodb" / "wav"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    result_args(ap, "bench_onnx")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from emomon.model.compute import fast_bf16
    from emomon.model.onnx_engine import OnnxPredictor, cached_export
    from emomon.model.predictor import Predictor

    files = sorted(DATA.glob("*.wav"))[: 20 if args.quick else None]
    audio = [read_audio(f) for f in files]
    long_enough = [a[: 2 * SAMPLE_RATE] for a in audio if len(a) >= 2 * SAMPLE_RATE]
    two_s, eight, keys = long_enough[0], long_enough[:8], [f"stream {i}" for i in range(8)]
    repeats = 3 if args.quick else 30
    exports = {p: cached_export(None, p)[0] for p in ("float32", "int8")}  # what `engine = "onnx"` runs

    dtypes = ["float32", "int8"] + (["bfloat16"] if fast_bf16("cpu") else [])
    speed = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        row = {"threads": threads}
        for dtype in dtypes:
            p = Predictor.from_bundle(device="cpu", dtype=dtype)
            row[f"torch {dtype}"] = round(median_ms(lambda: p.predict([two_s], update_session=False), repeats), 1)
        for prec, path in exports.items():
            o = OnnxPredictor(path, "cpu", threads)
            row[f"onnx {prec}"] = round(median_ms(lambda: o.predict([two_s], update_session=False), repeats), 1)
        # eight streams' segments in one call, as serve batches a burst (per segment)
        row["onnx int8 x8"] = round(median_ms(lambda: o.predict(eight, False, keys), max(3, repeats // 4)) / 8, 1)
        speed.append(row)
        print(row, flush=True)

    torch.set_num_threads(2)
    ref = Predictor.from_bundle(device="cpu", dtype="float32")
    engines = {f"onnx {p}": OnnxPredictor(path, "cpu", 2) for p, path in exports.items()}
    engines["torch int8"] = Predictor.from_bundle(device="cpu", dtype="int8")  # for comparison
    diffs = {p: [] for p in engines}
    same = {p: 0 for p in engines}
    for a in audio:
        ref.reset_session()
        want = np.array(list(ref.predict([a])[0].shares.values()))
        for p, o in engines.items():
            o.reset_session()
            got = np.array(list(o.predict([a])[0].shares.values()))
            diffs[p].append(float(np.abs(got - want).max()))
            same[p] += int(got.argmax() == want.argmax())
    agree = [
        {
            "engine": p,
            "max": f"{max(d):.2e}",
            "p95": f"{np.percentile(d, 95):.2e}",
            "median": f"{np.median(d):.2e}",
            "same top": f"{same[p] / len(audio):.1%}",
            "goal": f"<= {GOAL_F32 if p.endswith('float32') else GOAL_INT8}, top >= {GOAL_TOP:.0%}",
        }
        for p, d in diffs.items()
    ]
    for r in agree:
        print(r)

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "imitation": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ},
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "sentences": len(audio),
        "quick": args.quick,
        "speed_ms_per_2s": speed,
        "agreement": agree,
        "export_mb": {p: round(path.stat().st_size / 1e6, 1) for p, path in exports.items()},
    }
    if args.quick:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    cols = [("threads", "threads")] + [(k, k) for k in speed[0] if k != "threads"]
    body = (
        f"{result['cpu']}, onnxruntime {result['onnxruntime']}, torch {result['torch']}"
        + (f" (torch imitating {result['imitation']}; ONNX Runtime has no such switch)" if result["imitation"] else "")
        + f"; the shipped default model, one 2 s segment of Emo-DB speech per call, ms (median of {repeats}); "
        "`onnx int8 x8`: eight streams' segments in one call, per segment. "
        f"Goal on an AVX2-only CPU: <= {GOAL_MS_ONE_CORE:.0f} ms on one core in int8.\n\n"
        + table(speed, cols)
        + f"\nAgreement with torch float32 over {len(audio)} Emo-DB sentences (largest share difference "
        f"per sentence; export sizes {result['export_mb']} MB):\n\n" + table(agree, [(k, k) for k in agree[0]])
    )
    if result["imitation"]:  # a section of its own: these torch figures imitate another CPU
        update_doc(args.doc, body, "bench_onnx_imitated", "ONNX Runtime (torch imitating an AVX2-only CPU)")
    else:
        update_doc(args.doc, body, "bench_onnx", "ONNX Runtime")


if __name__ == "__main__":
    main()
