"""`emomon batch`: the driver both engines share.

INPUT... -> items (inputs.py) -> the output folder, new or resumed (store.py) -> the engine
(local.py, ray_engine.py) with progress (progress.py) -> files.parquet, errors.csv and
summary.json from the ledger. Exit code: 0 when every file was scored, 1 when some could
not be (errors.csv says why), 130 when stopped before the end (--resume finishes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from ...config import Config
    from ...model.tracker import SpeakerSettings
    from .settings import BatchSettings


def model_identity(path: Path) -> dict[str, Any]:
    """What names the model a run was scored with: the bundle's name and the SHA-256 of its
    files (the encoder's weights digest is inside bundle.json; an adapted encoder's trained
    part is the adapter file)."""
    from ...model.bundle import ADAPTER, MANIFEST, WEIGHTS

    digest = hashlib.sha256()
    for name in (MANIFEST, WEIGHTS, ADAPTER):
        if name != ADAPTER or (path / name).is_file():
            digest.update((path / name).read_bytes())
    return {"bundle": path.resolve().name, "sha256": digest.hexdigest()}


def default_workers(settings: BatchSettings) -> int:
    """This machine's cores over the threads each worker uses."""
    return max(1, (os.cpu_count() or 1) // settings.threads)


def check_speakers(speakers: SpeakerSettings) -> None:
    """The speaker encoder's weights are the pinned file and each --speaker NAME=FILE names an
    audio file that opens: one sentence before any worker starts."""
    from ...model.audio import open_audio
    from ...model.speaker import read_weights
    from ...model.tracker import parse_enrolment

    read_weights()
    for entry in speakers.speakers:
        open_audio(parse_enrolment(entry)[1]).close()


def batch(
    inputs: list[str], settings: BatchSettings, cfg: Config, console: Console, speakers: SpeakerSettings | None = None
) -> int:
    from ...model.bundle import DEFAULT_BUNDLE, load_bundle
    from .inputs import expand
    from .local import LocalEngine
    from .store import Store, output_columns

    if not settings.out:
        raise ConfigError("Say where the results go: --out DIR (or [batch] out).")
    bundle_path = Path(cfg.model.bundle or DEFAULT_BUNDLE)  # --model is applied there
    bundle = load_bundle(bundle_path)  # a bad bundle is one sentence here, before any worker starts
    items, extra = expand(inputs, output_columns(bundle.emotions, speakers is not None))
    run_settings = {"channels": settings.channels, "max_batch": cfg.runtime.max_batch, "vad": asdict(cfg.vad),
                    "dtype": cfg.runtime.dtype, "engine": cfg.runtime.engine, "encoder": cfg.model.encoder,
                    **({"speakers": asdict(speakers)} if speakers else {})}  # fmt: skip
    if speakers is not None:
        check_speakers(speakers)
    workers = settings.workers or default_workers(settings)
    if settings.engine == "ray":
        from .ray_engine import RayEngine

        engine: Any = RayEngine(workers, settings.address, settings.gpus_per_worker)
        engine.check()
    else:
        engine = LocalEngine(workers)
    store = Store.open(settings.out, settings.resume, model_identity(bundle_path), run_settings)
    with contextlib.closing(store):  # DIR/.lock is held until the run ends
        return _score(store, items, extra, settings, cfg, console, engine, workers, bundle, bundle_path, speakers)


def _score(store, items, extra, settings, cfg, console, engine, workers, bundle, bundle_path, speakers) -> int:
    """The open output folder's run: what is left to score, the engine, then the summary."""
    from .file_scorer import BatchJob
    from .progress import Progress
    from .store import segment_schema

    done = store.ledger()
    todo = [it for it in items if it.key not in done]
    device = "cuda" if settings.gpus_per_worker > 0 and cfg.runtime.device in ("auto", "cpu") else cfg.runtime.device
    engine.job = BatchJob(str(store.out), str(bundle_path), device, cfg.runtime.dtype, cfg.model.encoder or None,
                          cfg.vad, settings.channels == "each", store.run["run"], cfg.runtime.max_batch,
                          settings.threads, settings.part_s,
                          segment_schema(bundle.emotions, extra, speakers is not None), tuple(bundle.emotions),
                          speakers, bundle.norm_mode != "global", cfg.runtime.engine)  # fmt: skip
    skipped = len(items) - len(todo)
    console.print(
        f"emomon batch: {len(todo)} file(s) to score" + (f" ({skipped} already done)" if skipped else "")
        + f", {settings.engine} engine, {min(workers, max(1, len(todo)))} worker(s), into {store.out}",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    complete = False
    progress = Progress(console, len(todo), sum(it.size for it in todo))
    try:
        with progress:
            complete = engine.run(todo, store, progress) if todo else True
    finally:  # also when stopped or failed: the summary says what the folder holds
        wall = time.perf_counter() - t0
        ledger = store.ledger()
        summary = store.finish(items, extra, ledger, {
            "complete": complete and all(it.key in ledger for it in items),
            "engine": settings.engine,
            "workers": workers,
            "runtime": engine.described,
            "this_run": {"files": progress.done, "audio_hours": round(progress.audio_s / 3600, 6),
                         "wall_s": round(wall, 2),
                         "throughput": round(progress.audio_s / wall, 2) if wall > 0 else None},
        })  # fmt: skip
    console.print(
        f"emomon batch: {summary['files']} file(s), {summary['audio_hours']:.2f} h of audio, {summary['segments']} "
        f"segment(s), {summary['errors']} error(s); this run {progress.audio_s / 3600:.2f} h in {wall:.0f} s "
        f"({summary['this_run']['throughput'] or 0:.0f}x real time); {store.out}/summary.json",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if not complete:
        console.print("emomon batch: stopped before the end; run the same command with --resume to finish it.")
        return 130
    if summary["errors"]:
        console.print(f"emomon batch: {summary['errors']} file(s) could not be scored: {store.out}/errors.csv")
        return 1
    return 0
