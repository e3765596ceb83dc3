"""`emomon replay`: recorded audio through the same pipeline as the microphone.

file blocks -> Segmenter -> InferenceWorker -> sinks (CSV log, one printed line per
segment). At `speed` 1 the blocks are paced in real time, at 0 they go as fast as the
model takes them (back-pressure: the queue blocks, nothing is dropped). A file that cannot
be read is reported and skipped; the exit code is 1 when any failed. Ctrl-C stops the
source, flushes the open segment, drains the worker and closes the CSV.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from ...model.audio import SAMPLE_RATE
from ...model.errors import AudioError
from ...model.predictor import Predictor
from ...model.tracker import SpeakerSettings
from ..audio.segmenter import Segmenter, VadSettings
from ..audio.sources import audio_files, file_blocks
from .pipeline import Pipeline
from .settings import MonitorSettings


def replay(
    paths: list[str],
    predictor: Predictor,
    vad: VadSettings,
    monitor: MonitorSettings,
    console: Console,
    dashboard: bool = False,
    speakers: SpeakerSettings | None = None,
    each: bool = False,
) -> int:
    """`each`: every channel of a file is its own stream, spoken by "channel N" (a call
    recorded with one person per channel); else the channels are averaged."""
    files, problems = audio_files(paths)
    for f, why in problems:
        console.print(f"emomon: {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    failed = len(problems)
    name = files[0].name + (f" (+{len(files) - 1} more)" if len(files) > 1 else "") if files else "no file"
    pipe = Pipeline(
        predictor, monitor, console, dashboard, drop_oldest=False, input_name=name, speakers=speakers, by_channel=each
    )
    try:
        with pipe.screen:
            for f in files:
                try:
                    _replay_file(f, pipe, vad, monitor.speed, each)
                except AudioError as e:
                    console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                    failed += 1
            pipe.drain()  # while the dashboard still shows the last segments
    except KeyboardInterrupt:
        console.print("emomon: interrupted; finishing the segments already cut")
    finally:
        pipe.close()
    counts = [f"{pipe.worker.processed} segment(s) from {len(files)} file(s)"]
    counts += [f"{failed} failed"] if failed else []
    console.print(", ".join(counts + pipe.extra_counts()))
    return 1 if failed else 0


def _replay_file(path: Path, pipe: Pipeline, vad: VadSettings, speed: float, each: bool) -> None:
    segs: list[Segmenter] = []
    t0, pos = time.perf_counter(), 0.0
    try:
        for block in file_blocks(path, each=each):
            if not segs:  # one per channel, once the first block says how many
                segs = [Segmenter(vad) for _ in range(block.shape[1] if each else 1)]
            pos += len(block) / SAMPLE_RATE
            if speed > 0:  # pace like a sound card: a block is there once it has been "recorded"
                time.sleep(max(0.0, t0 + pos / speed - time.perf_counter()))
            pipe.feed(str(path), segs, block)
    finally:  # also on Ctrl-C and on a file that breaks off: keep what was heard
        pipe.flush(str(path), segs)
