"""The `emomon` command. Heavy libraries load inside the subcommand that needs them, so
`emomon --help` answers at once."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .model.errors import ConfigError, EmomonError, require

DEFAULT_CONFIG = Path("config.toml")
SAMPLE = Path(__file__).resolve().parent / "streamer" / "samples" / "emodb_speaker11.wav"  # shipped in the package


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
    runtime.add_argument(
        "--onnx", action="store_true",
        help="run the model's ONNX export under ONNX Runtime ([runtime] engine = \"onnx\"; emomon[onnx])",
    )  # fmt: skip
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
        description="Replay audio files (or folders of them) through VAD and the model, as the microphone would.",
    )
    r.add_argument("paths", nargs="*", metavar="PATH", help="audio file or folder (its audio files, sorted)")
    r.add_argument("--sample", action="store_true", help="replay the bundled sample (six Emo-DB sentences)")
    r.add_argument("--speed", type=float, help="1 = real time (default), 0 = as fast as possible")
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
    add_training(sub, [common])
    return parser


def run_batch(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    from dataclasses import replace

    require("batch", "emomon batch", "pyarrow")
    from .streamer.batch.run import batch

    names = ("out", "engine", "address", "workers", "threads", "gpus_per_worker", "channels", "resume")
    flags = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        settings = replace(cfg.batch, **flags)
    except ValueError as e:
        raise ConfigError(f"emomon batch: {e}.") from e
    if args.model:  # what every command runs: [model] bundle
        cfg = replace(cfg, model=replace(cfg.model, bundle=args.model))
    return batch(args.inputs, settings, cfg, console, speaker_settings(args, cfg))


def run_export(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    from .model.bundle import DEFAULT_BUNDLE
    from .model.export import export_bundle

    bundle = Path(args.model or cfg.model.bundle or DEFAULT_BUNDLE)
    precision = "int8" if args.int8 else "float32"
    out = args.out or Path(f"{bundle.resolve().name}-{precision}.onnx")
    info = export_bundle(bundle, out, precision)
    size = info.path.stat().st_size / 1e6
    console.print(f"{info.path}  {size:.1f} MB  {precision}  sha256 {info.sha256}", markup=False, highlight=False)
    return 0


def run_plot(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    require("train", "emomon plot", "matplotlib")
    if args.input.is_dir():
        require("batch", "emomon plot of a batch folder", "pyarrow")
    from .streamer.outputs.plot import plot, read_recording, window

    rec = read_recording(args.input, args.file)
    emotions = [e.strip() for e in args.emotions.split(",") if e.strip()] if args.emotions else None
    shown = window(rec, emotions, args.t_from, args.t_to)
    out = args.out or Path(f"{Path(rec.source).stem or 'recording'}.png")
    drew = plot(shown, out, args.title, rec.emotions)
    lanes = f", {len(drew['lanes'])} {rec.lane_kind}s" if rec.lane_kind else ""
    console.print(f"{out}  {drew['segments']} segments{lanes}", markup=False, highlight=False)
    return 0


def run_devices(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    require("live", "emomon devices", "sounddevice")
    from .streamer.audio.capture import NO_DEVICE, DeviceError, input_devices, quiet_native_stderr

    with quiet_native_stderr(not args.verbose):
        devices = input_devices()
    if not devices:
        raise DeviceError(NO_DEVICE)
    for d in devices:
        mark = "*" if d["default"] else " "
        console.print(f"{mark} {d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['rate']} Hz)", markup=False)
    return 0


def make_scorer(args: argparse.Namespace, cfg, monitor, speakers, live: bool, each: bool = False):
    """What makes live's or replay's Scorer around its Display (monitor/pipeline.py): the
    server's with --server, else the model here, loaded now (before any source opens)."""
    if args.server:
        from .streamer.serve.remote import RemoteScorer

        return lambda display: RemoteScorer(args.server, args.token, display, monitor)
    from .streamer.monitor.pipeline import LocalScorer

    predictor = load_predictor(cfg, args.model, None if live else args.device)
    return lambda display: LocalScorer(predictor, display, cfg.vad, monitor, cfg.runtime.max_batch, drop_oldest=live,
                                       speakers=speakers, by_channel=each)  # fmt: skip


def run_live(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    require("live", "emomon live", "sounddevice")
    if args.server:
        require("serve", "emomon live --server", "websockets")
    from .streamer.audio.capture import Microphone, quiet_native_stderr
    from .streamer.monitor.live import live

    monitor = monitor_settings(args, cfg)
    speakers = speaker_settings(args, cfg)
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration {args.duration} must be a positive number of seconds.")
    duration = args.duration or monitor.duration_s or None
    with quiet_native_stderr(not args.verbose):  # PortAudio's own lines only with -v
        mic = Microphone(args.input or monitor.input or None, timeout_s=monitor.input_timeout_s)  # a wrong device:
        scorer = make_scorer(args, cfg, monitor, speakers, live=True)  # said before the model loads
        return live(scorer, mic, monitor, duration, console, _dashboard(args, cfg, console))


def run_serve(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    from dataclasses import replace

    require("serve", "emomon serve", "starlette", "uvicorn", "websockets", "prometheus_client")
    from .streamer.serve.server import check_bind, serve

    flags = {"host": args.host, "port": args.port, "token": args.token, "max_streams": args.max_streams,
             "origins": tuple(args.origin) if args.origin else None,
             "allow_hosts": tuple(args.allow_host) if args.allow_host else None}  # fmt: skip
    try:
        settings = replace(cfg.serve, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as e:
        raise ConfigError(f"emomon serve: {e}.") from e
    check_bind(settings)  # before the model loads
    speakers = speaker_settings(args, cfg)
    logs = {"csv": args.csv, "jsonl": args.jsonl}
    monitor = replace(cfg.monitor, **{k: v for k, v in logs.items() if v is not None})
    if monitor.jsonl == "-":
        raise ConfigError("emomon serve writes JSON Lines to a file (--jsonl FILE), not to stdout.")
    if settings.model_process:
        from .model.bundle import DEFAULT_BUNDLE, load_bundle
        from .streamer.serve.model_process import ModelProcess

        path = args.model or cfg.model.bundle or DEFAULT_BUNDLE
        load_bundle(path)  # a bad bundle is one sentence here, not in the child
        predictor = ModelProcess(
            path, args.device or cfg.runtime.device, cfg.runtime.dtype, encoder_name=cfg.model.encoder or None,
            engine=cfg.runtime.engine, call_timeout_s=settings.model_timeout_s, max_restarts=settings.model_restarts,
        )  # fmt: skip
    else:
        predictor = load_predictor(cfg, args.model, args.device)
    return serve(predictor, settings, cfg.vad, monitor, cfg.runtime.max_batch, console, speakers)


def monitor_settings(args: argparse.Namespace, cfg):
    """[monitor] with the output flags of live and replay applied."""
    from dataclasses import replace

    flags = {"csv": args.csv, "jsonl": args.jsonl, "save_audio": args.save_audio, "interim_s": args.interim}
    monitor = replace(cfg.monitor, **{k: v for k, v in flags.items() if v is not None})
    if args.attention:
        monitor = replace(monitor, attention=True)
    if monitor.interim_s < 0:
        raise ConfigError(f"--interim {monitor.interim_s} must be 0 (off) or a positive number of seconds.")
    return monitor


def speaker_settings(args: argparse.Namespace, cfg):
    """[speakers] with --speakers and --speaker applied; None when speakers are not tracked."""
    from dataclasses import replace

    from .model.tracker import parse_enrolment

    settings = cfg.speakers
    if args.speaker:
        for entry in args.speaker:
            parse_enrolment(entry)  # one sentence for a malformed one, before the model loads
        settings = replace(settings, enabled=True, speakers=(*settings.speakers, *args.speaker))
    if args.speakers:
        settings = replace(settings, enabled=True)
    if not settings.enabled:
        return None
    if getattr(args, "server", None):
        raise ConfigError("--speakers runs where the model runs: with --server, start the server with "
                          "emomon serve --speakers instead.")  # fmt: skip
    return settings


def json_on_stdout(args: argparse.Namespace, cfg) -> bool:
    """--jsonl - (or [monitor] jsonl = "-"): stdout carries JSON only, everything human goes to stderr."""
    return getattr(args, "jsonl", None) == "-" or (getattr(args, "jsonl", None) is None and cfg.monitor.jsonl == "-")


def _dashboard(args: argparse.Namespace, cfg, console) -> bool:
    """The dashboard on a terminal unless --no-dashboard or [monitor] dashboard = false; plain lines
    when piped or logged."""
    return not args.no_dashboard and cfg.monitor.dashboard and console.is_terminal


def load_predictor(cfg, model: str | None, device: str | None):
    """The bundle from --model, [model] bundle, or the shipped default."""
    from .model.bundle import DEFAULT_BUNDLE
    from .model.engines import open_predictor

    path = model or cfg.model.bundle or DEFAULT_BUNDLE
    predictor = open_predictor(
        path, device or cfg.runtime.device, cfg.runtime.dtype, cfg.runtime.engine, cfg.model.encoder or None
    )
    d = predictor.describe()
    logging.getLogger("emomon").info(
        "model %s (%s%s, %s) on %s in %s",
        d["model"],
        d["encoder"],
        d["adapter"] and f" + {d['adapter']}",
        d["emotions"],
        d["device"],
        d["dtype"],
    )
    return predictor


def run_replay(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    from dataclasses import replace

    from .streamer.monitor.replay import replay

    paths = [*args.paths, *([str(SAMPLE)] if args.sample else [])]
    if not paths:
        raise ConfigError("Say what to replay: one or more audio files or folders, or --sample.")
    monitor = monitor_settings(args, cfg)
    speakers = speaker_settings(args, cfg)
    if args.speed is not None:
        if args.speed < 0:
            raise ConfigError(f"--speed {args.speed} must be 0 (as fast as possible) or more.")
        monitor = replace(monitor, speed=args.speed)
    each = args.channels == "each"
    if args.server:
        require("serve", "emomon replay --server", "websockets")
        if each:
            raise ConfigError("replay --channels each runs where the model runs, not with --server.")
    scorer = make_scorer(args, cfg, monitor, speakers, live=False, each=each)
    return replay(paths, scorer, monitor, console, _dashboard(args, cfg, console), each=each)


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
        if getattr(args, "onnx", False):
            from dataclasses import replace

            cfg = replace(cfg, runtime=replace(cfg.runtime, engine="onnx"))
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
