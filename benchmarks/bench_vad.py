"""VAD boundary accuracy on real speech: twelve Emo-DB sentences (different speakers and
emotions) joined with 1 s pauses, clean and with noise mixed in, through the segmenter
exactly as the monitor runs it (odd-sized chunks, default [vad] settings).

    python benchmarks/bench_vad.py [--emodb ../shared/data/emodb] [--seeds 3]

Reference boundaries. Clean: the clip's edges. In noise: where the clip's speech is
audible above the noise, i.e. the first and last 20 ms frame of the clean clip whose power
is at least the noise's mean power. The files are cut to 2.0 s, so some end in silence or
in a soft word-final sound far below the noise; no detector can place a boundary on
speech it cannot hear, and measuring against the file edge would reward a segmenter for
running on into the noise. Both references are reported.

SNR is the clips' mean power over the noise's. Noises: white, pink (1/f), and babble (eight
other Emo-DB sentences summed). Writes benchmarks/results/bench_vad.json and the bench_vad
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import table, update_doc  # noqa: E402
from model.audio import SAMPLE_RATE, read_audio  # noqa: E402
from model.specs import VadSettings  # noqa: E402
from streamer.segmenter import Segment, Segmenter  # noqa: E402

EMODB = ROOT.parent / "shared" / "data" / "emodb"
TOLERANCE_S = 0.150
FRAME = SAMPLE_RATE // 50  # 20 ms frames for the audible-speech reference
CONDITIONS = [("clean", None)] + [(kind, snr) for snr in (20, 10) for kind in ("white", "pink", "babble")]


def emodb_names(emodb: Path = EMODB) -> tuple[list[str], list[str]]:
    """The programme's twelve files (every 45th) and eight others for babble."""
    with (emodb / "labels.csv").open() as f:
        names = [Path(r["file"]).name for r in csv.DictReader(f)]
    return names[::45], names[1::45][:8]


def join_clips(clips: list[np.ndarray], gap_s: float = 1.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips between pauses of digital silence, and each clip's span in seconds."""
    gap = np.zeros(round(gap_s * SAMPLE_RATE), np.float32)
    parts, spans, t = [gap], [], gap_s
    for c in clips:
        parts += [c, gap]
        spans.append((t, t + len(c) / SAMPLE_RATE))
        t += len(c) / SAMPLE_RATE + gap_s
    return np.concatenate(parts), spans


def make_noise(kind: str, n: int, power: float, rng: np.random.Generator, talkers: list[np.ndarray] = ()) -> np.ndarray:
    """`n` samples of white, pink or babble noise scaled to mean power `power`."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":  # 1/f: shape white noise's spectrum by 1/sqrt(f)
        spec = np.fft.rfft(rng.standard_normal(n))
        spec[1:] /= np.sqrt(np.arange(1, len(spec)))
        spec[0] = 0
        x = np.fft.irfft(spec, n)
    elif kind == "babble":
        x = np.zeros(n)
        for talker in talkers:
            looped = np.tile(talker, n // len(talker) + 2)
            start = rng.integers(len(talker))
            x += looped[start : start + n]
    else:
        raise ValueError(f"unknown noise {kind!r}")
    return (x * np.sqrt(power / np.mean(x**2))).astype(np.float32)


def audible_spans(clips: list[np.ndarray], spans: list[tuple[float, float]], noise_power: float):
    """Per clip: from the first to the last 20 ms frame whose power is at least `noise_power`."""
    out = []
    for c, (t0, _) in zip(clips, spans):
        n = len(c) // FRAME * FRAME
        loud = np.flatnonzero(np.mean(c[:n].reshape(-1, FRAME) ** 2, axis=1) >= noise_power)
        out.append((t0 + loud[0] * FRAME / SAMPLE_RATE, t0 + (loud[-1] + 1) * FRAME / SAMPLE_RATE))
    return out


def segment(audio: np.ndarray, settings: VadSettings | None = None, chunk: int = 1234) -> list[Segment]:
    """The segmenter over `audio` in odd-sized chunks, as a sound card delivers them."""
    seg = Segmenter(settings)
    out = []
    for i in range(0, len(audio), chunk):
        out += seg.push(audio[i : i + chunk])
    last = seg.finish()
    return out + ([last] if last else [])


def boundary_errors(segs: list[Segment], spans: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """(start, end) error in seconds per clip, or None when the segments are not one per clip."""
    if len(segs) != len(spans):
        return None
    return [(s.start_s - a, s.end_s - b) for s, (a, b) in zip(segs, spans)]


def summary(errors: list[tuple[float, float]] | None) -> dict:
    if errors is None:
        return dict(one_per_clip=False)
    flat = [abs(float(e)) for pair in errors for e in pair]
    return dict(
        one_per_clip=True,
        within=sum(e <= TOLERANCE_S for e in flat),  # plain ints and floats for JSON
        of=len(flat),
        worst_s=round(max(flat), 3),
        misses=[f"clip {i}: start {a:+.2f}, end {b:+.2f}" for i, (a, b) in enumerate(errors)
                if max(abs(a), abs(b)) > TOLERANCE_S],
    )  # fmt: skip


def run(emodb: Path, seeds: int, settings: VadSettings) -> list[dict]:
    names, others = emodb_names(emodb)
    clips = [read_audio(emodb / "wav" / name) for name in names]
    talkers = [read_audio(emodb / "wav" / name) for name in others]
    audio, spans = join_clips(clips)
    power = float(np.mean(np.concatenate(clips) ** 2))
    rows = []
    for kind, snr in CONDITIONS:
        for seed in range(1 if snr is None else seeds):
            if snr is None:
                noise_power, mixed, reference = 0.0, audio, spans
            else:
                noise_power = power / 10 ** (snr / 10)
                noise = make_noise(kind, len(audio), noise_power, np.random.default_rng(seed), talkers)
                mixed, reference = audio + noise, audible_spans(clips, spans, noise_power)
            segs = segment(mixed, settings)
            rows.append(dict(
                noise=kind, snr_db=snr, seed=seed, segments=len(segs), clips=len(clips),
                audible=summary(boundary_errors(segs, reference)), file_edges=summary(boundary_errors(segs, spans)),
            ))  # fmt: skip
    return rows


def cell(s: dict) -> str:
    return f"{s['within']}/{s['of']} (worst {s['worst_s']:.2f} s)" if s["one_per_clip"] else "not one per clip"


def render(result: dict) -> str:
    rows = [
        dict(
            cond=r["noise"] if r["snr_db"] is None else f"{r['noise']} {r['snr_db']} dB",
            seed=r["seed"], segs=f"{r['segments']} / {r['clips']}",
            audible=cell(r["audible"]), file=cell(r["file_edges"]),
            misses="; ".join(r["audible"].get("misses", [])) or "-",
        )
        for r in result["rows"]
    ]  # fmt: skip
    cols = [("cond", "condition"), ("seed", "seed"), ("segs", "segments / clips"),
            ("audible", "boundaries within 150 ms of audible speech"), ("file", "... of the file edges"),
            ("misses", "misses (audible reference)")]  # fmt: skip
    return (
        f"Run {result['date']}. Command: `python benchmarks/bench_vad.py --seeds {result['seeds']}`. "
        f"Settings: the default [vad] table ({result['settings']}).\n\n"
        + table(rows, cols)
        + "\nReference boundaries: clean, the clip edges; in noise, the first and last 20 ms of each clip "
        "whose power is at least the noise's mean power (speech audible above the noise). The files are "
        "cut to 2.0 s: some end in silence or in a soft word-final sound under the noise, hence the lower "
        "file-edge counts. Babble is eight other Emo-DB sentences summed: WebRTC VAD hears it as speech, "
        "so sentences merge.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emodb", type=Path, default=EMODB, help="Emo-DB folder (labels.csv, wav/)")
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per noisy condition")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    settings = VadSettings()
    result = dict(
        date=time.strftime("%Y-%m-%d"), seeds=args.seeds, rows=run(args.emodb, args.seeds, settings),
        settings=", ".join(f"{k}={v}" for k, v in vars(settings).items()),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_vad.json").write_text(json.dumps(result, indent=1))
    body = render(result)
    print(body)
    update_doc(args.doc, body, "bench_vad", "VAD boundaries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
