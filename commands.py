"""What the runtime commands do (replay, live, serve, batch, export, plot, devices, doctor): each
`run_*` takes the parsed arguments and config.toml's Config and returns the exit code.
cli.py parses the command line and calls them; heavy libraries load inside each."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .model.errors import ConfigError, EmomonError, require

SAMPLE = Path(__file__).resolve().parent / "streamer" / "samples" / "emodb_speaker11.wav"  # shipped in the package


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


def run_doctor(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    from .model.bundle import DEFAULT_BUNDLE
    from .model.doctor import report

    bundle = args.model or cfg.model.bundle or DEFAULT_BUNDLE
    rows = report(bundle, args.device or cfg.runtime.device, cfg.runtime.dtype, cfg.runtime.engine)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        console.print(f"{k:<{width}}  {v}", markup=False, highlight=False, soft_wrap=True)
    return 0


def make_scorer(args: argparse.Namespace, cfg, monitor, speakers, live: bool, each: bool = False):
    """What makes live's or replay's Scorer around its Display (monitor/pipeline.py): the
    server's with --server, else the model here, loaded now (before any source opens)."""
    if args.server:
        from .streamer.serve.remote import RemoteScorer

        return lambda display: RemoteScorer(args.server, args.token, display)
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

    outputs, monitor = output_settings(args, cfg), cfg.monitor
    speakers = speaker_settings(args, cfg)
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration {args.duration} must be a positive number of seconds.")
    duration = args.duration or monitor.duration_s or None
    with quiet_native_stderr(not args.verbose):  # PortAudio's own lines only with -v
        mic = Microphone(args.input or monitor.input or None, timeout_s=monitor.input_timeout_s)  # a wrong device:
        scorer = make_scorer(args, cfg, monitor, speakers, live=True)  # said before the model loads
        return live(scorer, mic, outputs, duration, console, _dashboard(args, cfg, console))


def run_serve(args: argparse.Namespace, cfg, console, argv: list[str]) -> int:
    import os
    from dataclasses import replace

    require("serve", "emomon serve", "starlette", "uvicorn", "websockets", "prometheus_client")
    from .streamer.serve.server import check_bind, serve

    flags = {"host": args.host, "port": args.port, "token": args.token, "max_streams": args.max_streams,
             "origins": tuple(args.origin) if args.origin else None,
             "allow_hosts": tuple(args.allow_host) if args.allow_host else None, "workers": args.workers}  # fmt: skip
    try:
        settings = replace(cfg.serve, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as e:
        raise ConfigError(f"emomon serve: {e}.") from e
    check_bind(settings)  # before the model loads
    speakers = speaker_settings(args, cfg)
    logs = {"csv": args.csv, "jsonl": args.jsonl}
    outputs = replace(cfg.outputs, **{k: v for k, v in logs.items() if v is not None})
    if outputs.jsonl == "-":
        raise ConfigError("emomon serve writes JSON Lines to a file (--jsonl FILE), not to stdout.")
    if settings.model_process:
        from .model.bundle import DEFAULT_BUNDLE, load_bundle
        from .streamer.serve.model_process import ModelProcess

        path = args.model or cfg.model.bundle or DEFAULT_BUNDLE
        load_bundle(path)  # a bad bundle is one sentence here, not in the child
        cores = os.cpu_count() or 1
        n = settings.workers or cores
        threads = max(1, cores // n) if n > 1 else 0  # one worker: the engine's default, every core
        predictor = []
        try:
            for _ in range(n):  # one at a time: loading is memory- and CPU-heavy
                predictor.append(ModelProcess(
                    path, args.device or cfg.runtime.device, cfg.runtime.dtype, encoder_name=cfg.model.encoder or None,
                    engine=cfg.runtime.engine, call_timeout_s=settings.model_timeout_s,
                    max_restarts=settings.model_restarts, threads=threads,
                ))  # fmt: skip
        except BaseException:
            for p in predictor:
                p.close()
            raise
    else:
        predictor = load_predictor(cfg, args.model, args.device)
    return serve(predictor, settings, cfg.vad, outputs, cfg.runtime.max_batch, console, speakers)


def output_settings(args: argparse.Namespace, cfg):
    """[outputs] with the output flags of live and replay applied."""
    from dataclasses import replace

    if args.interim is not None and args.interim < 0:
        raise ConfigError(f"--interim {args.interim} must be 0 (off) or a positive number of seconds.")
    flags = {"csv": args.csv, "jsonl": args.jsonl, "save_audio": args.save_audio, "interim_s": args.interim}
    outputs = replace(cfg.outputs, **{k: v for k, v in flags.items() if v is not None})
    return replace(outputs, attention=True) if args.attention else outputs


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
        raise ConfigError("Say what to replay: audio files, folders, - (standard input) or a URL, or --sample.")
    opener = input_opener(args, cfg, paths)  # what a bad input flag or a missing emomon[media] says: before the model
    outputs, monitor = output_settings(args, cfg), cfg.monitor
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
    return replay(paths, scorer, outputs, monitor.speed, console, _dashboard(args, cfg, console), each=each,
                  opener=opener, duration_s=args.duration)  # fmt: skip


def input_opener(args: argparse.Namespace, cfg, paths: list[str]):
    """How replay opens each input (audio/sources.py: open_source) with --stream, --format,
    --rate and --pcm-channels; refuses in one sentence what cannot work, before any model loads."""
    from .model import media
    from .streamer.audio.sources import RawFormat, media_missing, open_source

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration {args.duration} must be a positive number of seconds.")
    if paths.count(media.STDIN) > 1:
        raise ConfigError("Standard input ('-') can be read once in a run.")
    raw = None
    if args.format or args.rate or args.pcm_channels:
        if not args.format:
            raise ConfigError("--rate and --pcm-channels describe raw PCM: say its --format (s16le or f32le) too.")
        if paths != [media.STDIN]:
            raise ConfigError("--format, --rate and --pcm-channels describe raw PCM on standard input: replay - alone.")
        try:
            raw = RawFormat(args.format, args.rate or 16000, args.pcm_channels or 1)
        except EmomonError as e:
            raise ConfigError(str(e)) from e
    elif missing := next(filter(None, map(media_missing, paths)), ""):
        raise ConfigError(missing)
    each = args.channels == "each"
    return lambda target: open_source(target, each, args.stream, raw if target == media.STDIN else None, cfg.input)
