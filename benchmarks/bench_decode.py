"""Decoding: what reading each kind of input costs, which decoder reads what, and memory
over an hour-long file.

Inputs are the bundled sample repeated to length, written in the test's way (PyAV's own
encoders; tests/support/media.py): WAV and FLAC (read by libsndfile and by FFmpeg, to
choose), M4A (AAC), WebM (Opus, 48 kHz), MP3 and MP4 (AAC with a video track) through
FFmpeg (model/media.py). Measured, in one process on one core:
- CPU time per second of audio, as a share of one core, for each input and decoder
  (the source's blocks at the input's rate, as replay and batch read them);
- resampling 48 kHz to 16 kHz in blocks: soxr's streaming resampler (what every source
  goes through, audio/stream.py) against FFmpeg's (swr, through PyAV), CPU per second of
  audio and how far the audio sent up to 48 kHz and back down differs from the original;
- an hour of AAC decoded block by block in a process of its own: its resident memory
  after the first minute and the most it reached after (flat: constant memory).
Goal (issue 41): decoding AAC <= 0.5 % of one core per second of audio; memory flat.

    python benchmarks/bench_decode.py            # docs/benchmarks.md, benchmarks/results/bench_decode.json
    python benchmarks/bench_decode.py --quick    # a minute of audio, five of AAC; nothing saved
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
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import cpu_name, result_args, table, update_doc  # noqa: E402
from support.media import FORMATS, encode  # noqa: E402

from emomon.model.audio import read_audio  # noqa: E402
from emomon.streamer.audio.sources import FileSource, MediaSource  # noqa: E402

SAMPLE = REPO / "streamer" / "samples" / "emodb_speaker11.wav"
GOAL_AAC = 0.5  # % of one core per second of audio


def cpu_share(blocks, seconds: float) -> float:
    """% of one core per second of audio to run through `blocks`."""
    t = time.process_time()
    for _ in blocks:
        pass
    return 100 * (time.process_time() - t) / seconds


def round_trip(audio: np.ndarray, back: np.ndarray) -> float:
    """The largest difference between 16 kHz audio and its copy sent to 48 kHz and back,
    at the lag (within 10 ms) where they agree best."""
    n = min(len(audio), len(back)) - 320
    return min(float(np.abs(audio[160:n] - back[160 + k : n + k]).max()) for k in range(-160, 161))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def memory_of(path: Path) -> dict:
    """In a process of its own (its memory is the reader's alone): resident memory after the
    first minute of `path` read block by block, and the most it reached after."""
    start_mb, done, peak = None, 0, 0.0
    for block in MediaSource(path).blocks():
        done += len(block)
        if start_mb is None and done >= 60 * 16000:
            start_mb = rss_mb()
        if start_mb is not None:
            peak = max(peak, rss_mb())
    start_mb = start_mb or peak
    return {"rss after 1 min MB": round(start_mb, 1), "peak after MB": round(peak, 1),
            "grew MB": round(peak - start_mb, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    result_args(ap, "bench_decode", "a minute of audio, five minutes of AAC; nothing saved")
    ap.add_argument("--memory-of", type=Path, help=argparse.SUPPRESS)  # the child of the memory measurement
    args = ap.parse_args()
    if args.memory_of:
        print(json.dumps(memory_of(args.memory_of)))
        return
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    import soxr

    sample = read_audio(SAMPLE)
    minutes = 1 if args.quick else 10
    audio = np.tile(sample, int(np.ceil(minutes * 60 * 16000 / len(sample))))[: minutes * 60 * 16000]
    seconds = len(audio) / 16000
    tmp = Path(tempfile.mkdtemp(prefix="emomon-bench-decode-"))
    rows = []
    for name in FORMATS:
        path = encode(audio, 16000, tmp / f"long.{name}", name)
        row = {"input": name, "MB per hour": round(path.stat().st_size / 1e6 * 3600 / seconds, 1)}
        row["FFmpeg %"] = round(cpu_share(MediaSource(path).blocks(), seconds), 4)
        try:
            row["libsndfile %"] = round(cpu_share(FileSource(path).blocks(), seconds), 4)
        except Exception:  # noqa: BLE001 - a format libsndfile does not read
            row["libsndfile %"] = "-"
        rows.append(row)
        print(row, flush=True)

    hi = soxr.resample(audio, 16000, 48000).astype(np.float32)
    block = 48000 // 2
    t = time.process_time()
    ours = soxr.ResampleStream(48000, 16000, 1, dtype="float32", quality="HQ")
    a = np.concatenate([ours.resample_chunk(hi[i : i + block], last=i + block >= len(hi))
                        for i in range(0, len(hi), block)])  # fmt: skip
    soxr_cpu = 100 * (time.process_time() - t) / seconds
    import av

    t = time.process_time()
    swr = av.AudioResampler(format="fltp", layout="mono", rate=16000)
    parts = []
    for i in range(0, len(hi), block):
        frame = av.AudioFrame.from_ndarray(hi[None, i : i + block], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, i
        parts += [f.to_ndarray()[0] for f in swr.resample(frame)]
    parts += [f.to_ndarray()[0] for f in swr.resample(None)]
    b = np.concatenate(parts)
    swr_cpu = 100 * (time.process_time() - t) / seconds
    diff = {name: round(round_trip(audio, out), 4) for name, out in (("soxr", a), ("swr", b))}
    resampling = {"soxr %": round(soxr_cpu, 4), "FFmpeg swr %": round(swr_cpu, 4),
                  "soxr round trip": diff["soxr"], "swr round trip": diff["swr"]}  # fmt: skip
    print(resampling, flush=True)

    hour_min = 5 if args.quick else 60
    long = np.tile(audio, int(np.ceil(hour_min / minutes)))[: hour_min * 60 * 16000]
    path = encode(long, 16000, tmp / "hour.m4a", "m4a")
    del long
    child = subprocess.run([sys.executable, __file__, "--memory-of", str(path)], capture_output=True, text=True,
                           check=True)  # fmt: skip
    memory = {"minutes": hour_min, **json.loads(child.stdout.splitlines()[-1])}
    print(memory, flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    if args.quick:
        return
    import soundfile

    result = {"date": str(date.today()), "cpu": cpu_name(), "av": av.__version__, "ffmpeg": ".".join(
        map(str, av.ffmpeg_version_info)) if hasattr(av, "ffmpeg_version_info") else "",
        "soundfile": soundfile.__version__, "minutes": minutes, "decoding": rows, "resampling": resampling,
        "memory": memory}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    body = (
        f"{result['cpu']}, one core; PyAV {result['av']}, soundfile {result['soundfile']}. {minutes} minutes of the "
        "bundled sample repeated, encoded by PyAV's encoders; CPU time per second of audio as a share of one core "
        "(the source's blocks at the input's rate). Goal: AAC <= 0.5 %.\n\n"
        + table(rows, [(k, k) for k in rows[0]])
        + f"\nResampling 48 -> 16 kHz in 0.5 s blocks: soxr {resampling['soxr %']} %, FFmpeg's swr "
        f"{resampling['FFmpeg swr %']} % of a core per second of audio; 16 -> 48 -> 16 kHz differs from the "
        f"original by at most {resampling['soxr round trip']} (soxr) and {resampling['swr round trip']} (swr). "
        "Every source keeps soxr (audio/stream.py).\n\n"
        "An hour of AAC read block by block: resident memory "
        f"{memory['rss after 1 min MB']} MB after the first minute, at most {memory['peak after MB']} MB after "
        f"(grew {memory['grew MB']} MB).\n"
    )
    update_doc(args.doc, body, "bench_decode", "Decoding")


if __name__ == "__main__":
    main()
