"""The `emomon` command: its parser and main (what each runtime command does: commands.py).
Heavy libraries load inside the subcommand that needs them, so `emomon --help` answers at once."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .commands import run_batch, run_devices, run_doctor, run_export, run_live, run_plot, run_replay, run_serve
from .model.errors import EmomonError

DEFAULT_CONFIG = Path("config.toml")


def build_parser() -> argparse.ArgumentParser:
    from .training.cli import add_parsers as add_training

    parser = argparse.ArgumentParser(
        prog="emomon",
        description="Real-time speech emotion-share monitor (WebRTC VAD, Whisper or HuBERT encoders, pooled or "
        "attention regressors).",
    )
    # --config and -v work before the command and after it (`emomon live --config x.toml`);
    # after it they are SUPPRESSed unless given, so they do not overwrite the global ones.
    common = argparse.ArgumentParser(add_help=False)
    outputs = argparse.ArgumentParser(add_help=False)  # what live and replay write, besides the screen
    bundle = argparse.ArgumentParser(add_help=False)  # which model: every command that runs or writes one
    bundle.add_argument("--model", help="model bundle folder (default: [model] bundle, else the shipped default)")
    runtime = argparse.ArgumentParser(add_help=False, parents=[bundle])  # what runs it, for the commands that score
    engines = runtime.add_mutually_exclusive_group()
    engines.add_argument(
        "--onnx", action="store_true",
        help="run the model's ONNX export under ONNX Runtime ([runtime] engine = \"onnx\"; emomon[onnx])",
    )  # fmt: skip
    engines.add_argument(
        "--torch", action="store_true", help='run the model on torch ([runtime] engine = "torch"; default: auto)'
    )
    outputs.add_argument("--csv", help="append one row per segment to this CSV file")
    outputs.add_argument("--jsonl", help="append one JSON object per segment to this file; - = stdout")
    outputs.add_argument("--attention", action="store_true", help="JSON Lines: add the attention weights")
    outputs.add_argument("--save-audio", metavar="DIR", help="save each scored segment as DIR/<id>.flac")
    outputs.add_argument("--interim", type=float, metavar="S", help="score a segment still open every S s; 0 = off")
    outputs.add_argument(
        "--server", metavar="URL", help="stream to an emomon serve (ws://HOST:PORT) instead of a local model"
    )
    outputs.add_argument("--token", help="the server's token, with --server")
    who = argparse.ArgumentParser(add_help=False)  # --speakers: live, replay, serve and batch
    who.add_argument("--speakers", action="store_true", help="say who spoke each segment ([speakers])")
    who.add_argument(
        "--speaker", action="append", metavar="NAME=FILE", help="a known voice, by name (repeat; implies --speakers)"
    )
    for p, default in ((parser, None), (common, argparse.SUPPRESS)):
        p.add_argument(
            "--config", type=Path, default=default, help="settings file (default: ./config.toml when present)"
        )
        p.add_argument("-v", "--verbose", action="store_true", default=default or False, help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    r = sub.add_parser(
        "replay",
        parents=[common, outputs, who, runtime],
        help="run recorded audio through the monitor",
        description="Replay recordings (files, folders, standard input, network streams) through VAD and the model, "
        "as the microphone would.",
    )
    r.add_argument(
        "paths", nargs="*", metavar="INPUT",
        help="audio or video file, folder (its audio files, sorted), - (standard input) or a URL (http(s), rtsp, "
        "rtmp, srt); anything but libsndfile's formats needs emomon[media]",
    )  # fmt: skip
    r.add_argument("--sample", action="store_true", help="replay the bundled sample (six Emo-DB sentences)")
    r.add_argument("--speed", type=float, help="1 = real time (default), 0 = as fast as possible (not a live stream)")
    r.add_argument("--duration", type=float, metavar="S", help="read at most S seconds of each input")
    r.add_argument(
        "--stream", type=int, metavar="N", help="the N-th audio stream of a container (default 0, the first)"
    )
    r.add_argument("--format", choices=("s16le", "f32le"), help="standard input is headerless PCM of this sample type")
    r.add_argument("--rate", type=int, metavar="HZ", help="with --format: its sample rate (default 16000)")
    r.add_argument("--pcm-channels", type=int, metavar="C", help="with --format: its channels (default 1)")
    r.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--no-dashboard", action="store_true", help="print one plain line per segment")
    r.add_argument(
        "--channels", choices=("mix", "each"), default="mix",
        help="mix (default): channels averaged; each: every channel its own stream and speaker ('channel 0', ...)",
    )  # fmt: skip
    r.set_defaults(run=run_replay)
    lv = sub.add_parser(
        "live",
        parents=[common, outputs, who, runtime],
        help="monitor a microphone",
        description="Monitor a microphone: VAD, model, CSV, one line per segment.",
    )
    lv.add_argument("--device", dest="input", help="input device index or (part of its) name (see: emomon devices)")
    lv.add_argument("--duration", type=float, help="stop after this many seconds")
    lv.add_argument("--no-dashboard", action="store_true", help="print one plain line per segment")
    lv.set_defaults(run=run_live, device=None)
    sv = sub.add_parser(
        "serve",
        parents=[common, who, runtime],
        help="serve the streaming WebSocket API and its browser page",
        description="Emotion shares for audio streamed over WebSockets: many streams batched on one model.",
    )
    sv.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs --token)")
    sv.add_argument("--port", type=int, help="port (default 8765)")
    sv.add_argument("--token", help="clients must send it (Authorization: Bearer TOKEN, or ?token=TOKEN)")
    sv.add_argument("--max-streams", type=int, help="open streams at once (default 64)")
    sv.add_argument(
        "--origin", action="append", metavar="ORIGIN",
        help="a web page origin (https://app.example) allowed to open streams besides the server's own page; "
        "repeatable; '*' = any (default: [serve] origins)",
    )  # fmt: skip
    sv.add_argument(
        "--allow-host", action="append", metavar="NAME",
        help="a host name clients may reach the server by, besides loopback names and IP addresses (DNS "
        "rebinding); repeatable; '*' = any (default: [serve] allow_hosts)",
    )  # fmt: skip
    sv.add_argument(
        "--workers", type=int, metavar="N",
        help="model processes, each with cores/N threads and its own streams; 0 = one per core (default: [serve] "
        "workers, 1)",
    )  # fmt: skip
    sv.add_argument("--csv", help="append every stream's segments to this CSV file (with a stream column)")
    sv.add_argument("--jsonl", help="append every stream's segments to this JSON Lines file")
    sv.add_argument("--device", help="compute device: auto, cpu, cuda or cuda:N")
    sv.set_defaults(run=run_serve)
    b = sub.add_parser(
        "batch",
        parents=[common, who, runtime],
        help="score recorded archives into a Parquet dataset (local processes or Ray)",
        description="Score many recordings: one row per speech segment in DIR/segments (Parquet), "
        "errors.csv, files.parquet and summary.json; --resume finishes an interrupted run.",
    )
    b.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="audio file, folder (recursive), glob pattern, or manifest (CSV or Parquet with a path column)",
    )  # fmt: skip
    b.add_argument("--out", metavar="DIR", help="output folder ([batch] out)")
    b.add_argument("--engine", choices=("local", "ray"), help="local worker processes (default) or a Ray Data pipeline")
    b.add_argument("--address", help="ray: join this cluster (e.g. 127.0.0.1:6379); default: start a local one")
    b.add_argument("--workers", type=int, help="model workers (default: cores / threads)")
    b.add_argument("--threads", type=int, help="torch threads per worker (default 1)")
    b.add_argument("--gpus-per-worker", type=float, metavar="F", help="GPUs per worker (ray: per actor)")
    b.add_argument("--channels", choices=("mix", "each"), help="mix (default) or each channel its own stream")
    b.add_argument("--resume", action="store_true", default=None, help="score only what DIR does not hold yet")
    b.set_defaults(run=run_batch)
    ex = sub.add_parser(
        "export",
        parents=[common, bundle],
        help="write a model bundle as one ONNX file (samples in, shares out)",
        description="Export a bundle to ONNX: the log-mel front end, the encoder layers it uses, normalisation "
        "and the regressors in one graph that takes 16 kHz samples and returns the emotion shares (docs/onnx.md).",
    )
    ex.add_argument("--int8", action="store_true", help="ONNX Runtime's dynamic int8 quantisation of the encoder")
    ex.add_argument("-o", "--out", type=Path, help="the ONNX file (default: <bundle>-<float32|int8>.onnx here)")
    ex.set_defaults(run=run_export)
    pl = sub.add_parser(
        "plot",
        parents=[common],
        help="draw a recording's emotion shares over time (PNG or SVG)",
        description="Draw what emomon wrote for one recording: the shares of every emotion over time as stacked "
        "bands over the speech segments, and a lane per speaker or channel with each segment in its top emotion's "
        "colour.",
    )
    pl.add_argument("input", type=Path, metavar="PATH", help="a CSV or JSON Lines log, or a batch output folder")
    pl.add_argument("--file", help="the recording to draw when PATH holds several (its source, or the end of its path)")
    pl.add_argument("-o", "--out", type=Path, help="the picture, .png or .svg (default: <recording>.png here)")
    pl.add_argument("--emotions", help="comma-separated emotions to show (default: all of the model's)")
    pl.add_argument("--from", dest="t_from", type=float, metavar="S", help="start of the window, seconds")
    pl.add_argument("--to", dest="t_to", type=float, metavar="S", help="end of the window, seconds")
    pl.add_argument("--title", help="the picture's title (default: the recording's file name)")
    pl.set_defaults(run=run_plot)
    dv = sub.add_parser("devices", parents=[common], help="list audio input devices")
    dv.set_defaults(run=run_devices)
    dr = sub.add_parser(
        "doctor", parents=[common, runtime],
        help="what this machine offers the model, and which dtype and engine emomon chose and why",
    )  # fmt: skip
    dr.add_argument("--device", help="compute device: auto, cpu, cuda or cuda:N")
    dr.set_defaults(run=run_doctor)
    add_training(sub, [common])
    return parser


def json_on_stdout(args: argparse.Namespace, cfg) -> bool:
    """--jsonl - (or [outputs] jsonl = "-"): stdout carries JSON only, everything human goes to stderr."""
    return getattr(args, "jsonl", None) == "-" or (getattr(args, "jsonl", None) is None and cfg.outputs.jsonl == "-")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="emomon: %(message)s")
    from rich.console import Console

    try:
        from .config import load_config

        path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        cfg = load_config(path)
        engine = "onnx" if getattr(args, "onnx", False) else "torch" if getattr(args, "torch", False) else None
        if engine:
            from dataclasses import replace

            cfg = replace(cfg, runtime=replace(cfg.runtime, engine=engine))
        console = Console(stderr=json_on_stdout(args, cfg))
        from .model.memory import bound_this_process

        bound_this_process()  # a model run here: oneDNN's cache and malloc's arenas bounded (model/memory.py)
        return args.run(args, cfg, console, argv)
    except EmomonError as e:
        print(f"emomon: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("emomon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
