"""`emomon replay`: recorded audio through the same pipeline as the microphone.

file blocks -> Segmenter -> InferenceWorker -> sinks (CSV log, one printed line per
segment). At `speed` 1 the blocks are paced in real time, at 0 they go as fast as the
model takes them (back-pressure: the queue blocks, nothing is dropped). A file that cannot
be read is reported and skipped; the exit code is 1 when any failed. Ctrl-C stops the
source, flushes the open segment, drains the worker and closes the CSV.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from rich.console import Console

from model.audio import SAMPLE_RATE
from model.errors import AudioError
from model.predictor import Predictor
from model.specs import MonitorSettings, VadSettings
from streamer.csv_log import CsvLog
from streamer.dashboard import Dashboard, MonitorState
from streamer.segmenter import Segmenter
from streamer.sinks import make_sink
from streamer.sources import audio_files, file_blocks
from streamer.worker import InferenceWorker, Job


def replay(
    paths: list[str],
    predictor: Predictor,
    vad: VadSettings,
    monitor: MonitorSettings,
    console: Console,
    dashboard: bool = False,
) -> int:
    files, problems = audio_files(paths)
    for f, why in problems:
        console.print(f"emomon: {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    failed = len(problems)
    log = CsvLog(monitor.csv, predictor.emotions) if monitor.csv else None

    state = MonitorState(predictor.emotions) if dashboard else None
    sink = make_sink(log, None if dashboard else console, state=state)
    worker = InferenceWorker(predictor, sink, monitor.queue_size, monitor.max_batch, drop_oldest=False).start()
    screen = Dashboard(state, console) if state is not None else contextlib.nullcontext()
    try:
        with screen:
            for f in files:
                try:
                    _replay_file(f, worker, vad, monitor.speed, state)
                except AudioError as e:
                    console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                    failed += 1
            worker.close()  # drain while the dashboard still shows the last segments
    except KeyboardInterrupt:
        console.print("emomon: interrupted; finishing the segments already cut")
    finally:
        worker.close()
        if log is not None:
            log.close()
    console.print(f"{worker.processed} segment(s) from {len(files)} file(s)" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def _replay_file(
    path: Path, worker: InferenceWorker, vad: VadSettings, speed: float, state: MonitorState | None
) -> None:
    seg = Segmenter(vad)
    t0, pos = time.perf_counter(), 0.0
    try:
        for block in file_blocks(path):
            pos += len(block) / SAMPLE_RATE
            if speed > 0:  # pace like a sound card: a block is there once it has been "recorded"
                time.sleep(max(0.0, t0 + pos / speed - time.perf_counter()))
            for s in seg.push(block):
                worker.submit(Job(str(path), s))
            if state is not None:
                state.set_input(seg.state, seg.level, worker.queue.qsize(), seg.background_dbfs)
    finally:  # also on Ctrl-C and on a file that breaks off: keep what was heard
        last = seg.finish()
        if last is not None:
            worker.submit(Job(str(path), last))
