"""Load benchmark of `emomon serve`: N concurrent clients on loopback, each streaming Emo-DB
sentences between 1 s pauses in real time (100 ms messages), against one server process.

Independent speakers do not finish their sentences in the same 100 ms, so each client
starts at a random offset within one sentence-and-pause period (3 s: each sentence is the
first 2 s of an Emo-DB file, as in the earlier copy of the corpus the first numbers were
measured on). `--aligned` starts them all at once instead: every stream then
closes a segment in the same instant, a burst of N segments, the worst case.

For each N: sentences sent, segments returned and dropped, the latency from the client
sending a sentence's last sample to receiving its segment (p50/p95; the VAD's 0.6 s
hang-over is part of it), and the server's CPU (of the machine's cores, from /proc).
The clients run with asyncio in `--client-procs` processes of their own (2), apart from the
server's, and share the machine's cores with it; `--workers N` starts the server with N
model processes.

    python benchmarks/bench_serve.py        # N = 1, 8, 32, 64, 96, 128, and 64 aligned; updates docs/benchmarks.md
    python benchmarks/bench_serve.py --streams 1 4 --sentences 2 --no-doc   # a quick check
    python benchmarks/bench_serve.py --streams 64 --aligned --no-doc        # the burst
    python benchmarks/bench_serve.py --onnx --streams 32 64 96          # the default under ONNX Runtime
    python benchmarks/bench_serve.py --random-ssl large --streams 1 2 4 8 --also-aligned
                                      # HuBERT-Large (random weights, real size) + the recipe's head
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_model import machine  # noqa: E402
from benchmarks.report import table, update_doc  # noqa: E402
from emomon.model.audio import SAMPLE_RATE, read_audio, to_pcm16  # noqa: E402

EMODB = ROOT.parent / "shared" / "data" / "emodb" / "wav"
GOAL_STREAMS, GOAL_P95_S = 64, 1.2
CHUNK_S = 0.1
BACKLOG_S = 0.5  # last sentences' p50 this much above the first ones': the model is falling behind
SENTENCE_S = 2.0  # each sentence's first 2 s (the full-length files run 1.2-9.0 s)
PERIOD_S = SENTENCE_S + 1.0  # a sentence and its 1 s pause: the span of the clients' random start offsets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_ssl_bundle(size: str, folder: Path) -> Path:
    """A bundle on a HuBERT of real size with random weights, with the head of
    training/experiments/default_hubert_large.toml (pooled, shared softmax), also random."""
    import torch

    from benchmarks.bench_model import hubert_config, save_random
    from emomon.model.bundle import Bundle, new_bank, save_bundle
    from emomon.model.settings import from_dict, read_toml
    from emomon.model.specs import EncoderSpec, RegressorSpec

    recipe = read_toml(ROOT / "training" / "experiments" / "default_hubert_large.toml")
    spec = from_dict(RegressorSpec, recipe["regressor"], "regressor")
    dim = hubert_config(size).hidden_size
    emotions = ("anger", "boredom", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
    torch.manual_seed(0)
    bundle = Bundle(
        emotions=emotions, encoder=EncoderSpec.paper(name=str(save_random(size, folder / f"hubert-{size}"))),
        regressor=spec, input_dim=dim, mixed_layers=0, norm_mean=[0.0] * dim, norm_std=[1.0] * dim,
        bank=new_bank(spec, emotions, dim).eval(), metrics={"note": "random weights: a benchmark"},
    )  # fmt: skip
    return save_bundle(bundle, folder / "bundle")


def start_server(port: int, max_streams: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "emomon.cli", "serve", "--port", str(port),
           "--max-streams", str(max_streams), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(3000):  # HuBERT-Large loads (and quantises) in tens of seconds
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read()) from None
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and its children (the model process) so far, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def programme(sentences: list[np.ndarray], k: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple]]:
    """A client's audio: 1 s of silence, then k random sentences each followed by 1 s of silence;
    and each sentence's (start_s, end_s) in that audio."""
    pause = np.zeros(SAMPLE_RATE, np.float32)
    parts, spans, t = [pause], [], 1.0
    for i in rng.choice(len(sentences), k, replace=False):
        s = sentences[i]
        spans.append((t, t + len(s) / SAMPLE_RATE))
        t += len(s) / SAMPLE_RATE + 1.0
        parts += [s, pause]
    return np.concatenate(parts), spans


async def client(url: str, audio: np.ndarray, spans: list[tuple], start_at: float) -> dict:
    """One client; a connection the server lets fail (no answer to keepalive pings for 20 s,
    refused) is counted, with what it received before."""
    from websockets.exceptions import WebSocketException

    received: list[tuple[float, dict]] = []
    sent_end: dict[int, float] = {}
    try:
        await _stream(url, audio, spans, start_at, received, sent_end)
        failed = 0
    except (WebSocketException, OSError, TimeoutError):
        failed = 1
    return _score(spans, received, sent_end) | {"failed": failed}


async def _stream(url: str, audio: np.ndarray, spans: list[tuple], start_at: float, received: list, sent_end: dict):
    from websockets.asyncio.client import connect

    pcm = to_pcm16(audio).tobytes()
    step = int(CHUNK_S * SAMPLE_RATE)
    async with connect(url, max_size=None, open_timeout=60, compression=None) as ws:
        await ws.recv()  # ready

        async def reader() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "segment":
                    received.append((time.perf_counter(), msg))
                elif msg["type"] == "end":
                    return

        task = asyncio.create_task(reader())
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        t0 = time.perf_counter()
        for n, i in enumerate(range(0, len(audio), step)):
            await asyncio.sleep(max(0.0, t0 + n * CHUNK_S - time.perf_counter()))  # real time
            await ws.send(pcm[2 * i : 2 * (i + step)])
            now_s = (i + step) / SAMPLE_RATE
            for k, (_, end) in enumerate(spans):
                if k not in sent_end and now_s >= end:
                    sent_end[k] = time.perf_counter()
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(task, 120)


def _score(spans: list[tuple], received: list[tuple[float, dict]], sent_end: dict[int, float]) -> dict:
    """Match segments to sentences (by end time) and take each sentence's latency, with the
    sentence's place in the client's programme."""
    latencies, dropped, matched = [], 0, set()
    for t, msg in received:
        if msg["status"] == "dropped":
            dropped += 1
            continue
        # the sentence whose end this segment is closest to
        k = min(range(len(spans)), key=lambda j: abs(spans[j][1] - msg["end_s"]))
        if abs(spans[k][1] - msg["end_s"]) < 0.8 and k not in matched and k in sent_end:
            matched.add(k)
            latencies.append((k, t - sent_end[k]))
    return dict(sent=len(spans), returned=len(received) - dropped, dropped=dropped, latencies=latencies)


async def run_clients(port: int, plans: list[tuple[np.ndarray, list[tuple], float]]) -> list[dict]:
    return await asyncio.gather(*(client(f"ws://127.0.0.1:{port}/v1/stream", *plan) for plan in plans))


def client_process(port: int, plans: list, out) -> None:
    """A share of the clients in a process of their own (multiprocessing target)."""
    out.send(asyncio.run(run_clients(port, plans)))
    out.close()


def run_load(port: int, n: int, sentences: list[np.ndarray], k: int, seed: int, aligned: bool, procs: int) -> list:
    """N clients, each with its programme and start time, spread over `procs` processes (0:
    in this one). time.perf_counter is CLOCK_MONOTONIC on Linux: one clock for all of them."""
    import multiprocessing as mp

    rng = np.random.default_rng(seed)
    start_at = time.perf_counter() + 3.0 + n * 0.02  # every client connected before the audio starts
    plans = []
    for _ in range(n):
        audio, spans = programme(sentences, k, rng)
        offset = 0.0 if aligned else float(rng.uniform(0.0, PERIOD_S))
        plans.append((audio, spans, start_at + offset))
    if procs <= 0:
        return asyncio.run(run_clients(port, plans))
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    for i in range(procs):
        mine, theirs = ctx.Pipe(duplex=False)
        w = ctx.Process(target=client_process, args=(port, plans[i::procs], theirs), daemon=True)
        w.start()
        pipes.append(mine)
        workers.append(w)
    results = [r for pipe in pipes for r in pipe.recv()]
    for w in workers:
        w.join(30)
    return results


def bench(n: int, sentences: list[np.ndarray], k: int, extra: list[str], aligned: bool = False, procs: int = 0) -> dict:
    port = free_port()
    server = start_server(port, max(n, 1), extra)
    try:
        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        results = run_load(port, n, sentences, k, seed=n, aligned=aligned, procs=procs)
        cpu = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0)
    finally:
        server.terminate()
        server.wait(60)
    lat = sorted(x for r in results for _, x in r["latencies"])
    sent = sum(r["sent"] for r in results)
    # A model that falls behind shows as latency that grows from each client's first sentence to its last.
    first = [x for r in results for k, x in r["latencies"] if k == 0]
    last = [x for r in results for k, x in r["latencies"] if k == r["sent"] - 1]
    row = dict(
        streams=n, starts="aligned" if aligned else "staggered", sentences=sent,
        segments=sum(r["returned"] for r in results),
        dropped=sum(r["dropped"] for r in results), failed=sum(r["failed"] for r in results), matched=len(lat),
        p50_s=round(statistics.median(lat), 3) if lat else None,
        p95_s=round(float(np.percentile(lat, 95)), 3) if lat else None,
        first_p50_s=round(statistics.median(first), 3) if first else None,
        last_p50_s=round(statistics.median(last), 3) if last else None,
        server_cpu_cores=round(cpu, 2), streams_per_core=round(n / (os.cpu_count() or 1), 1),
    )  # fmt: skip
    in_time = row["p95_s"] is not None and row["p95_s"] <= GOAL_P95_S
    steady = bool(first and last) and row["last_p50_s"] <= row["first_p50_s"] + BACKLOG_S
    row["keeps_up"] = bool(steady and row["dropped"] == 0 and row["failed"] == 0 and row["matched"] >= 0.95 * sent)
    row["holds"] = bool(in_time and row["keeps_up"])
    print(json.dumps(row), flush=True)
    return row


def render(result: dict) -> str:
    m, rows = result["machine"], result["rows"]

    def largest(starts: str, key: str = "holds") -> str:
        kind = [r for r in rows if r["starts"] == starts]
        good = [r["streams"] for r in kind if r.get(key)]
        n = max((n for n in good if all(r.get(key) for r in kind if r["streams"] <= n)), default=0)
        return f"{starts} **{n}** (of N = {', '.join(str(r['streams']) for r in kind)})"

    kinds = [k for k in ("staggered", "aligned") if any(r["starts"] == k for r in rows)]
    goal = any(r["streams"] >= GOAL_STREAMS and r["holds"] for r in rows if r["starts"] == "staggered")
    return (
        f"Run {m['date']} on {m['cpu']} ({os.cpu_count()} cores), torch {m['torch']}, model "
        f"`{result['model']}`. Command: `python benchmarks/bench_serve.py{result['args']}`.\n"
        f"Each client streams {result['sentences_per_client']} Emo-DB sentences between 1 s pauses in real time "
        f"(100 ms messages) on loopback; the clients run {result.get('clients', 'in the benchmark process')} on "
        "the same machine, sharing its cores with the server. Clients "
        f"start at random offsets within {PERIOD_S:.0f} s (staggered) or all at once (aligned: every stream closes "
        "a segment in the same instant). Latency: the client sending a sentence's last sample -> its segment "
        "received (VAD hang-over included).\n\n"
        + table(
            rows,
            [
                ("streams", "streams"),
                ("starts", "starts"),
                ("sentences", "sentences"),
                ("segments", "segments"),
                ("dropped", "dropped"),
                ("failed", "streams failed"),
                ("matched", "matched"),
                ("p50_s", "p50 (s)"),
                ("p95_s", "p95 (s)"),
                ("server_cpu_cores", "server CPU (cores)"),
                ("streams_per_core", "streams per core"),
                ("first_p50_s", "first sentences p50 (s)"),
                ("last_p50_s", "last sentences p50 (s)"),
                ("keeps_up", "keeps up"),
                ("holds", "keeps up, p95 <= 1.2 s"),
            ],
        )  # fmt: skip
        + f"\nLargest N that holds (p95 <= {GOAL_P95_S} s): {'; '.join(largest(k) for k in kinds)}. "
        f"Largest N that keeps up (nothing dropped, the last sentences' p50 within {BACKLOG_S} s of the first "
        f"ones'): {'; '.join(largest(k, 'keeps_up') for k in kinds)}. "
        + (
            f"Goal ({GOAL_STREAMS} staggered streams, nothing dropped, p95 <= {GOAL_P95_S} s, the default model): "
            f"**{'met' if goal else 'not met'}**.\n"
            if result["model"].startswith("default")
            else "\n"
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64, 96, 128])
    ap.add_argument("--sentences", type=int, default=4, help="sentences per client")
    ap.add_argument("--model", help="bundle folder (default: the shipped default)")
    ap.add_argument(
        "--random-ssl", choices=["base", "large"], help="serve a HuBERT of this size with random weights instead"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="print and save JSON only")
    engine = ap.add_mutually_exclusive_group()
    engine.add_argument("--onnx", action="store_true", help="the server runs the model under ONNX Runtime (--onnx)")
    engine.add_argument("--torch", action="store_true", help="the server runs the model on torch (--torch)")
    ap.add_argument("--aligned", action="store_true", help="start every client at once (a burst); default: staggered")
    ap.add_argument(
        "--also-aligned", type=int, nargs="*", default=[64], help="after the staggered runs, these N aligned too"
    )
    ap.add_argument("--workers", type=int, help="the server's model processes (serve --workers)")
    ap.add_argument(
        "--client-procs", type=int, default=2,
        help="processes the clients run in, apart from the server and this one (0: in this process); default 2",
    )  # fmt: skip
    args = ap.parse_args(argv)
    files = sorted(EMODB.glob("*.wav"))
    if not files:
        raise SystemExit(f"bench_serve needs Emo-DB at {EMODB}")
    # About a hundred sentences of all speakers, each its first 2.0 s as the earlier copy of
    # Emo-DB held them: one 2 s segment per stream every 3 s, the load measured before.
    sentences = [read_audio(f)[: int(SENTENCE_S * SAMPLE_RATE)] for f in files[::5]]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model = args.model
        if args.random_ssl:
            model = str(random_ssl_bundle(args.random_ssl, Path(tmp)))
        extra = (["--model", model] if model else []) + (["--onnx"] if args.onnx else ["--torch"] if args.torch else [])
        extra += ["--workers", str(args.workers)] if args.workers is not None else []
        procs = args.client_procs
        rows = [bench(n, sentences, args.sentences, extra, args.aligned, procs) for n in args.streams]
        if not args.aligned:
            rows += [bench(n, sentences, args.sentences, extra, True, procs) for n in args.also_aligned]
    name = f"hubert-{args.random_ssl} (random weights)" if args.random_ssl else args.model or "default"
    name += " under ONNX Runtime (int8)" if args.onnx else " on torch" if args.torch else " (engine auto)"
    name += f", {args.workers or os.cpu_count()} model processes" if args.workers not in (None, 1) else ""
    result = dict(
        machine=machine("cpu"), rows=rows, model=name, sentences_per_client=args.sentences,
        clients=f"in {args.client_procs} processes of their own" if args.client_procs else "in the benchmark process",
        workers=args.workers if args.workers is not None else 1,
        args="".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    key = f"bench_serve_hubert_{args.random_ssl}" if args.random_ssl else "bench_serve"
    key += "_onnx" if args.onnx else "_torch" if args.torch else ""
    key += f"_workers{args.workers}" if args.workers not in (None, 1) else ""
    (args.out / f"{key}.json").write_text(json.dumps(result, indent=2) + "\n")
    body = render(result)
    print(body)
    if not args.no_doc:
        n = args.workers if args.workers not in (None, 1) else 1
        title = (
            f"Serve: HuBERT-{args.random_ssl.capitalize()} on the CPU"
            if args.random_ssl
            else "Serve: streams on one model"
            if n == 1
            else f"Serve: streams on {n or 'one per core'} model processes"
        ) + (" (ONNX Runtime)" if args.onnx else " (torch)" if args.torch else "")
        update_doc(args.doc, body, key, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
