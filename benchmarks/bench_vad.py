"""VAD boundary accuracy on real speech: Emo-DB sentences joined with 1 s pauses, clean and
with noise mixed in, through the segmenter exactly as the monitor runs it (odd-sized
chunks, default [vad] settings).

    python benchmarks/bench_vad.py [--emodb ../shared/data/emodb] [--seeds 3]

Programmes: twelve sentences each, every 45th file of labels.csv from four offsets (0, 11,
22, 33; offset 0 is the one the tests use), so 48 sentences of ten speakers in all
emotions. The files are the full-length recordings (1.2-9.0 s), and some sentences hold a
pause as long as the hang-over, where splitting and bridging are both right; a file whose
longest inner pause (20 ms frames 30 dB below its loud frames) reaches MAX_PAUSE_S, half
the hang-over, is replaced by the next file in labels.csv, so every sentence is one
utterance and "one segment per sentence" is the right answer. SNR is the programme's
mean speech power over the noise's. Noises: white, pink (1/f), and babble (eight other
Emo-DB sentences summed).

Reference boundaries: where each sentence is audible, i.e. the first and last 20 ms frame
of the clean clip whose power above 80 Hz is at least the noise's mean power above 80 Hz
(clean: louder than digital silence, -90 dBFS). Recordings start and end in room
noise and often in a word-final sound far below the added noise; no detector can place a
boundary on speech nobody hears, and the file edge would reward a segmenter for running
on into the noise. Counts against the file edges are reported
beside. Writes benchmarks/results/bench_vad.json and the bench_vad section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_name, table, update_doc  # noqa: E402
from emomon.model.audio import SAMPLE_RATE, read_audio  # noqa: E402
from emomon.streamer.audio.segmenter import VadSettings  # noqa: E402
from emomon.training.vad_eval import (  # noqa: E402
    CONDITIONS,
    MAX_PAUSE_S,
    OFFSETS,
    audible_spans,
    boundary_errors,
    join_clips,
    make_noise,
    programme_files,
    segment,
    summary,
)

EMODB = ROOT.parent / "shared" / "data" / "emodb"


def run(emodb: Path, seeds: int, settings: VadSettings) -> list[dict]:
    rows = []
    for offset in OFFSETS:
        files, others = programme_files(emodb, offset)
        clips = [read_audio(f) for f in files]
        talkers = [read_audio(f) for f in others]
        audio, spans = join_clips(clips)
        power = float(np.mean(np.concatenate(clips) ** 2))
        for kind, snr in CONDITIONS:
            for seed in range(1 if snr is None else seeds):
                noise = None
                if snr is not None:
                    rng = np.random.default_rng(seed)
                    noise = make_noise(kind, len(audio), power / 10 ** (snr / 10), rng, talkers)
                mixed = audio if noise is None else audio + noise
                t = time.perf_counter()
                segs = segment(mixed, settings)
                seconds = time.perf_counter() - t
                rows.append(dict(
                    programme=offset, noise=kind, snr_db=snr, seed=seed, segments=len(segs), clips=len(clips),
                    frame_us=round(seconds / (len(mixed) / (SAMPLE_RATE * settings.decision_ms / 1000)) * 1e6, 1),
                    core_pct=round(seconds / (len(mixed) / SAMPLE_RATE) * 100, 3),
                    audible=summary(boundary_errors(segs, audible_spans(clips, spans, noise))),
                    file_edges=summary(boundary_errors(segs, spans)),
                ))  # fmt: skip
    return rows


def aggregate(rows: list[dict], engine: str) -> list[dict]:
    """One line per condition over programmes and seeds."""
    out = []
    for kind, snr in CONDITIONS:
        runs = [r for r in rows if r["noise"] == kind and r["snr_db"] == snr]
        strays = sum(max(0, r["segments"] - r["clips"]) for r in runs)
        whole = [r for r in runs if r["audible"]["one_per_clip"]]

        def within(key: str) -> str:
            done = [r[key] for r in whole]
            if not done:
                return "-"
            worst = max(d["worst_s"] for d in done)
            return f"{sum(d['within'] for d in done)}/{sum(d['of'] for d in done)} (worst {worst:.2f} s)"

        misses = [f"p{r['programme']}/s{r['seed']} {m}" for r in whole for m in r["audible"]["misses"]]
        out.append(dict(
            engine=engine, cond=kind if snr is None else f"{kind} {snr} dB", runs=len(runs), extra=strays,
            core=f"{statistics.median(r['core_pct'] for r in runs):.2f} %",
            whole=f"{len(whole)}/{len(runs)}", audible=within("audible"), file=within("file_edges"),
            misses="; ".join(misses[:4]) + (f"; ... ({len(misses)} in all)" if len(misses) > 4 else "") or "-",
        ))  # fmt: skip
    return out


def render(result: dict) -> str:
    cols = [("engine", "VAD"), ("cond", "condition"), ("whole", "runs with one segment per sentence"),
            ("extra", "segments beyond one per sentence (splits, strays)"),
            ("audible", "their boundaries within 150 ms of audible speech"), ("file", "... of the file edges"),
            ("misses", "misses (programme/seed clip: errors in s)"), ("core", "one core per stream")]  # fmt: skip
    return (
        f"Run {result['date']}. Command: `python benchmarks/bench_vad.py --seeds {result['seeds']}`: "
        f"{len(OFFSETS)} programmes of 12 Emo-DB sentences, {result['seeds']} noise draws each. "
        f"Settings: the default [vad] table ({result['settings']}), with engine = "
        f"{' or '.join(repr(e) for e in result['engines'])}. CPU: {result['cpu']}.\n\n"
        + table([a for e in result["engines"] for a in aggregate(result["rows"][e], e)], cols)
        + "\nReference: the first and last 20 ms of each sentence audible above the noise (power above "
        "80 Hz at least the noise's; clean: louder than digital silence). The recordings begin and end "
        "in room noise, hence the lower file-edge counts. Sentences hold no inner pause of "
        f"{MAX_PAUSE_S} s or more (a file with one is replaced by the next). A run that does not "
        "give one segment per sentence counts no boundaries. Babble is eight other Emo-DB sentences summed: "
        "WebRTC VAD hears it as speech, so sentences merge. Per-run numbers: benchmarks/results/bench_vad.json.\n"
        "\nSegmenter cost on this machine (VAD, levels, and for WebRTC VAD the 4-8 kHz band), one core: "
        + "; ".join(
            f"{e} median {statistics.median(r['frame_us'] for r in result['rows'][e]):.0f} us per decision"
            for e in result["engines"]
        )
        + ".\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emodb", type=Path, default=EMODB, help="Emo-DB folder (labels.csv, wav/)")
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per noisy condition")
    ap.add_argument("--engine", nargs="+", choices=("webrtc", "silero"), default=["webrtc", "silero"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    settings = VadSettings()
    result = dict(
        date=time.strftime("%Y-%m-%d"), seeds=args.seeds, engines=args.engine, cpu=cpu_name(),
        rows={e: run(args.emodb, args.seeds, replace(settings, engine=e)) for e in args.engine},
        settings=", ".join(f"{k}={v}" for k, v in vars(settings).items() if k != "engine"),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_vad.json").write_text(json.dumps(result, indent=1))
    body = render(result)
    print(body)
    update_doc(args.doc, body, "bench_vad", "VAD boundaries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
