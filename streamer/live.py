"""`emomon live`: the microphone through VAD and the model, until Ctrl-C, SIGTERM or --duration.

The capture never waits for the model: the worker queue drops its oldest segment when
full, and every dropped segment is still logged (status "dropped") and counted.
Shutdown order: stop the source, flush the open segment, drain the worker, close the CSV.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from datetime import UTC, datetime, timedelta

from rich.console import Console

from model.audio import SAMPLE_RATE
from model.predictor import Predictor
from model.specs import MonitorSettings, VadSettings
from streamer.capture import Microphone
from streamer.csv_log import CsvLog
from streamer.dashboard import Dashboard, MonitorState
from streamer.segmenter import Segmenter
from streamer.sinks import make_sink
from streamer.worker import InferenceWorker, Job


def live(
    predictor: Predictor,
    device: str | None,
    vad: VadSettings,
    monitor: MonitorSettings,
    duration: float | None,
    console: Console,
    dashboard: bool = False,
) -> int:
    mic = Microphone(device)  # first: a wrong device fails before anything is opened
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = CsvLog(monitor.csv, predictor.emotions) if monitor.csv else None
    seg = Segmenter(vad)
    t0: list[datetime] = []  # wall time of stream time 0: the first block's arrival minus its length
    state = MonitorState(predictor.emotions) if dashboard else None
    sink = make_sink(log, None if dashboard else console, lambda: t0[0] if t0 else None, state)
    worker = InferenceWorker(predictor, sink, monitor.queue_size, monitor.max_batch, drop_oldest=True).start()
    console.print(f"listening on {mic.name} ({mic.rate} Hz); Ctrl-C stops", soft_wrap=True)
    timer = threading.Timer(duration or 0, stop.set)
    timer.daemon = True
    screen = Dashboard(state, console) if state is not None else contextlib.nullcontext()
    try:
        with mic, screen:
            if duration:
                timer.start()
            for block in mic.blocks(stop):
                if not t0:
                    t0.append(datetime.now(UTC) - timedelta(seconds=len(block) / SAMPLE_RATE))
                for s in seg.push(block):
                    worker.submit(Job(mic.name, s))
                if state is not None:
                    lost = mic.overflows + mic.lost_blocks
                    state.set_input(seg.state, seg.level, worker.queue.qsize(), seg.background_dbfs, lost)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        timer.cancel()
        last = seg.finish()
        if last is not None:
            worker.submit(Job(mic.name, last))
        worker.close()
        if log is not None:
            log.close()
        signal.signal(signal.SIGTERM, previous)
    lost = mic.overflows + mic.lost_blocks
    console.print(
        f"{worker.processed} segment(s), {worker.dropped} dropped, {worker.failed} failed"
        + (f", {lost} input block(s) lost" if lost else "")
    )
    return 0
