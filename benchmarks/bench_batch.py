"""emomon batch against replay on the same recorded audio: throughput, CPU use, memory per worker.

Start-up (loading torch and the model; Ray: starting a local instance and its actors) is
measured with a one-sentence run of each command and given apart ("net of start-up").

The audio: `--hours` of five-minute files (`--file-min`), each sentences of Emo-DB, RAVDESS
and nEMO in random order with pauses of 0.3-1.5 s, 16 kHz mono WAV, built once into
~/.cache/emomon/bench_batch/. Each run is the real command in its own process, timed from
start to exit (model loading included), its process tree sampled every 0.5 s:

    replay   emomon replay FILES --speed 0 (one process, torch's default threads)
    local1   emomon batch --engine local --workers 1
    local2   emomon batch --engine local --workers 2
    ray2     emomon batch --engine ray --workers 2 (a local Ray instance, started and stopped)

Goals (issue 16): local2 >= 1.8x replay's audio hours per hour; ray2 within 15 % of local2;
each worker's memory flat over the run. Writes benchmarks/results/bench_batch.json and the
"Batch" section of docs/benchmarks.md (not with --quick).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
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

from report import cpu_name, table, update_doc  # noqa: E402

from emomon.model.audio import SAMPLE_RATE, read_audio  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CLI = [sys.executable, "-m", "emomon.cli"]
RUNS = ("replay", "local1", "local2", "ray2")


def sentences(per_corpus: int, seed: int) -> list[np.ndarray]:
    """`per_corpus` sentences from each corpus, drawn at random."""
    rng = np.random.default_rng(seed)
    out = []
    for corpus in ("emodb", "ravdess", "nemo"):
        with (DATA / corpus / "labels.csv").open(newline="") as f:
            names = [r["file"] for r in csv.DictReader(f)]
        for i in rng.choice(len(names), size=min(per_corpus, len(names)), replace=False):
            out.append(read_audio(DATA / corpus / names[i]))
    return out


def build_audio(hours: float, file_min: float, seed: int = 0) -> tuple[Path, list[Path]]:
    """The benchmark's files, built once and kept in the cache."""
    import soundfile as sf

    n_files = max(1, round(hours * 60 / file_min))
    folder = Path.home() / ".cache" / "emomon" / "bench_batch" / f"{n_files}x{file_min:g}min_seed{seed}"
    files = [folder / f"call{i:04d}.wav" for i in range(n_files)]
    if all(f.exists() for f in files):
        return folder, files
    folder.mkdir(parents=True, exist_ok=True)
    pool = sentences(200, seed)
    rng = np.random.default_rng(seed + 1)
    for f in files:
        parts, n = [], 0
        while n < file_min * 60 * SAMPLE_RATE:
            s = pool[rng.integers(len(pool))]
            pause = np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), np.float32)
            parts += [s, pause]
            n += len(s) + len(pause)
        audio = np.concatenate(parts)[: int(file_min * 60 * SAMPLE_RATE)]
        tmp = f.with_suffix(".tmp.wav")
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
        tmp.rename(f)
    return folder, files


def is_worker(cmdline: str) -> bool:
    """A local engine's worker process, or a Ray scoring actor (a pool's, or a stream scorer)."""
    return "spawn_main" in cmdline or "MapBatches(ScoreActor)" in cmdline or "StreamScore" in cmdline


def measure(cmd: list[str], cwd: Path, env: dict[str, str], alone: bool) -> dict:
    """Run `cmd`; wall time, CPU seconds of its process tree, and each worker's RSS over time
    (`alone`: the command's own process is the worker)."""
    import psutil

    log = tempfile.TemporaryFile("w+")  # not a pipe: replay prints a line per segment and would block on a full one
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    rss: dict[int, list[tuple[float, float]]] = {}
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                    if (p.pid == proc.pid) if alone else is_worker(" ".join(p.cmdline())):
                        rss.setdefault(p.pid, []).append((time.perf_counter() - t0, p.memory_info().rss / 2**20))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        time.sleep(0.5)
    proc.wait()
    wall = time.perf_counter() - t0
    log.seek(0)
    output = log.read()
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{output[-3000:]}")
    workers = []
    for series in rss.values():
        if len(series) < 4:
            continue
        t_end = series[-1][0]
        t_start = series[0][0]
        at = [next(m for t, m in series if t >= t_start + q * (t_end - t_start)) for q in (0.25, 0.5, 0.75, 1.0)]
        workers.append({"peak_mb": round(max(m for _, m in series), 1), "rss_mb": [round(m, 1) for m in at]})
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(cpu.values()), 1), "workers": workers, "output": output}


def one_night(throughput: float, cores: int, hours: float = 10_000, night_h: float = 10) -> str:
    """On paper: the cores (and 16-core nodes) that score `hours` of audio in one night at the
    measured throughput per core, with one single-threaded worker per core."""
    import math

    per_core = throughput / cores
    need = hours / night_h
    n = math.ceil(need / per_core)
    nodes = math.ceil(n / 16)
    nodes_text = f"{nodes} node{'' if nodes == 1 else 's'}"
    return (f"On paper: {hours:,.0f} hours in a {night_h:g}-hour night is {need:,.0f} audio hours per hour; at "
            f"{per_core:.1f}x real time per core (local2 on this CPU) that is {n} cores, {nodes_text} of "
            "16 cores, with one worker per core and the audio on shared storage. GPU: no device was lent while "
            "this was measured, so there is no GPU figure to scale from.\n")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=2.0, help="audio in all (default 2)")
    ap.add_argument("--file-min", type=float, default=5.0, help="minutes per file (default 5)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"which of {', '.join(RUNS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="3 minutes of audio in 1-minute files, no doc")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--table", action="store_true", help="only rewrite the doc section from the saved results")
    args = ap.parse_args()
    if args.table:
        update_doc(args.doc, report(json.loads((args.out / "bench_batch.json").read_text())), "batch", "Batch")
        return
    if args.quick:
        args.hours, args.file_min = 0.05, 1.0
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - set(RUNS)
    if unknown:
        ap.error(f"unknown run(s): {', '.join(sorted(unknown))}")
    folder, files = build_audio(args.hours, args.file_min)
    audio_h = len(files) * args.file_min / 60
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    rows = []
    startup = folder.parent / "startup.wav"  # one sentence: what a run costs before and after the work
    if not startup.exists():
        import soundfile as sf

        sf.write(startup, sentences(1, 0)[0], SAMPLE_RATE)

    def command(run: str, inputs: list[str], out: Path) -> list[str]:
        if run == "replay":
            return [*CLI, "replay", *inputs, "--speed", "0", "--no-dashboard"]
        engine, workers = ("local", run[5:]) if run.startswith("local") else ("ray", run[3:])
        return [*CLI, "batch", *inputs, "--out", str(out), "--engine", engine, "--workers", workers]

    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            print(f"{run}: {len(files)} files, {audio_h:.2f} h of audio ...", flush=True)
            fixed = measure(command(run, [str(startup)], Path(tmp) / f"{run}-startup"), Path(tmp), env, False)
            inputs = [str(f) for f in files] if run == "replay" else [str(folder)]
            m = measure(command(run, inputs, Path(tmp) / run), Path(tmp), env, alone=run == "replay")
            m["startup_s"] = fixed["wall_s"]
            if run != "replay":
                summary = json.loads((Path(tmp) / run / "summary.json").read_text())
                assert summary["files"] == len(files) and summary["errors"] == 0, summary
                m["segments"] = summary["segments"]
            else:
                found = re.search(r"(\d+) segment\(s\) from (\d+) file", m["output"])
                assert found and int(found[2]) == len(files), m["output"][-2000:]
                m["segments"] = int(found[1])
            del m["output"]
            rows.append({"run": run, "audio_h": round(audio_h, 3), **m,
                         "throughput": round(audio_h * 3600 / m["wall_s"], 1),
                         "net_throughput": round(audio_h * 3600 / max(1e-9, m["wall_s"] - m["startup_s"]), 1),
                         "cpu_cores": round(m["cpu_s"] / m["wall_s"], 2)})  # fmt: skip
            print(f"  {rows[-1]['throughput']}x real time, {rows[-1]['cpu_cores']} cores busy, "
                  f"workers {rows[-1]['workers']}", flush=True)  # fmt: skip
    by = {r["run"]: r for r in rows}
    ratios = {}
    for a, b in (("local2", "replay"), ("ray2", "local2"), ("local2", "local1")):
        if a in by and b in by:
            ratios[f"{a}_over_{b}"] = round(by[a]["throughput"] / by[b]["throughput"], 2)
            ratios[f"{a}_over_{b}_net"] = round(by[a]["net_throughput"] / by[b]["net_throughput"], 2)
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": date.today().isoformat(), "files": len(files),
              "file_min": args.file_min, "rows": rows, **ratios}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_batch_quick.json" if args.quick else "bench_batch.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    print(text)
    if not args.quick:
        update_doc(args.doc, text, "batch", "Batch")


def report(result: dict) -> str:
    """The markdown of a result: its table, the ratios against the goals, the one-night sizing."""
    rows = [dict(r) for r in result["rows"]]
    for r in rows:
        r["memory"] = "; ".join(" ".join(f"{m:.0f}" for m in w["rss_mb"]) for w in r["workers"]) or "-"
    audio_h = result["files"] * result["file_min"] / 60
    text = (f"{result['cpu']}, {result['cores']} cores, {result['date']}: {result['files']} files of "
            f"{result['file_min']:g} min ({audio_h:.1f} h), default model, whole-command wall time.\n\n")  # fmt: skip
    text += table(rows, [("run", "run"), ("wall_s", "wall s"), ("throughput", "x real time"),
                         ("startup_s", "start-up s"), ("net_throughput", "net x real time"),
                         ("cpu_cores", "cores busy"), ("segments", "segments"),
                         ("memory", "RSS per worker at 1/4, 1/2, 3/4, end (MB)")])  # fmt: skip
    for k, v in result.items():
        if "_over_" in k and not k.endswith("_net"):
            a, b = k.split("_over_")
            text += f"\n{a} against {b}: {v}x, {result[k + '_net']}x net of start-up"
    text += "\n"
    local2 = next((r for r in rows if r["run"] == "local2"), None)
    if local2 is not None:
        text += "\n" + one_night(local2["throughput"], result["cores"])
    return text


if __name__ == "__main__":
    main()
