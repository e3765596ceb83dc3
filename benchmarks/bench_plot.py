"""`emomon plot` on long recordings: wall time and peak memory of the whole command.

Inputs, written by emomon's own writers and layouts:
- a one-hour replay CSV log (CsvLog): 1,200 segments of 2.5 s every 3 s, two speakers;
- a batch output folder of 300 one-hour files (the Parquet layout of outputs/record.py,
  360,000 segment rows), of which one file is drawn (a filter on its source).
Each is drawn to PNG and to SVG by `python -m emomon.cli plot` in a process of its
own; wall time and the process's peak resident memory (its VmHWM) are reported.
Goals (issue 29): a one-hour replay CSV in under 5 s, under 300 MB.

    python benchmarks/bench_plot.py            # docs/benchmarks.md, benchmarks/results/bench_plot.json
    python benchmarks/bench_plot.py --quick    # a tenth of the rows, nothing saved
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import cpu_name, result_args, table, update_doc  # noqa: E402

from emomon.streamer.outputs.csv_log import CsvLog  # noqa: E402
from emomon.streamer.outputs.record import Row, columns, parquet_types  # noqa: E402

EMOTIONS = ("anger", "boredom", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def segments(n: int, source: str, rng) -> list[Row]:
    """n segments of 2.5 s every 3 s, shares drifting, two speakers taking turns."""
    logits = np.cumsum(rng.normal(0, 0.4, (n, len(EMOTIONS))), axis=0)
    shares = np.exp(logits - logits.max(axis=1, keepdims=True))
    shares /= shares.sum(axis=1, keepdims=True)
    return [Row(source, i, 3.0 * i, 3.0 * i + 2.5, shares=dict(zip(EMOTIONS, map(float, shares[i]))),
                id=f"run-{Path(source).stem}-{i:04d}", speaker=f"speaker {1 + (i // 4) % 2}", latency_ms=40.0)
            for i in range(n)]  # fmt: skip


def write_batch(folder: Path, files: int, per_file: int, rng) -> None:
    """A batch output folder: run.json, segments/part-*.parquet, files.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "segments").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"format": "emomon-batch", "format_version": 1}))
    schema = pa.schema([(c, t) for c, t in parquet_types(EMOTIONS, speaker=True)])
    sources = [f"calls/call{k:04d}.wav" for k in range(files)]
    for part in range(0, files, 50):  # a part file per 50 recordings, as workers commit them
        rows = [
            r.flat("p", EMOTIONS, speaker=True) for s in sources[part : part + 50] for r in segments(per_file, s, rng)
        ]
        pq.write_table(
            pa.Table.from_pylist(rows, schema=schema), folder / "segments" / f"part-0-{part // 50:05d}.parquet"
        )
    pq.write_table(pa.table({"path": sources, "source": sources}), folder / "files.parquet")


# The command as `emomon` runs it; at exit it prints its own peak resident memory (VmHWM: a
# fresh count from exec on, where getrusage's maxrss would carry this big parent's over).
CHILD = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('VmHWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0],"
    " file=sys.stderr))\n"
    "from emomon.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_plot(args: list[str]) -> dict:
    """The command in a process of its own: wall seconds and peak resident MB."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "plot", *args], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"emomon plot {' '.join(args)} failed: {done.stderr}")
    peak_kb = int(done.stderr.rsplit("VmHWM", 1)[1].split()[0])
    return {"seconds": round(wall, 2), "peak_mb": round(peak_kb / 1024, 1), "printed": done.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    result_args(ap, "bench_plot", "a tenth of the rows; nothing saved")
    args = ap.parse_args()
    per_file, files = (120, 30) if args.quick else (1200, 300)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with CsvLog(work / "hour.csv", EMOTIONS, speakers=True) as log:
            for r in segments(per_file, "call.wav", rng):
                log.write(r)
        write_batch(work / "batch", files, per_file, rng)
        assert columns("c", EMOTIONS, speaker=True)[-3:] == ["top_emotion", "latency_ms", "status"]
        for what, inp, extra in ((f"replay CSV, {per_file * 3 / 60:.0f} min", work / "hour.csv", []),
                                 (f"batch folder of {files} such files, one drawn", work / "batch",
                                  ["--file", "call0123.wav" if not args.quick else "call0012.wav"])):  # fmt: skip
            for fmt in ("png", "svg"):
                r = run_plot([str(inp), *extra, "-o", str(work / f"out.{fmt}")])
                rows.append({"input": what, "format": fmt, "segments": per_file, **r})
                print({k: v for k, v in rows[-1].items() if k != "printed"}, flush=True)
    result = {"date": str(date.today()), "cpu": cpu_name(), "rows": rows}
    if args.quick:
        return
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    body = (
        f"{result['cpu']}, {result['date']}: `python benchmarks/bench_plot.py`. The whole `emomon plot` command "
        "in its own process (Python start, matplotlib, reading, drawing, writing). Goal: a one-hour replay CSV in "
        "under 5 s and 300 MB.\n\n"
        + table(
            rows,
            [
                ("input", "input"),
                ("format", "picture"),
                ("segments", "segments drawn"),
                ("seconds", "seconds"),
                ("peak_mb", "peak MB"),
            ],
        )  # fmt: skip
    )
    update_doc(args.doc, body, "bench_plot", "emomon plot")


if __name__ == "__main__":
    main()
