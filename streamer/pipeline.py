"""The part live and replay share: segments from a Segmenter go to the inference worker,
results to the CSV log, the dashboard state and/or one printed line per segment."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

import numpy as np
from rich.console import Console

from ..model.predictor import Predictor
from .config import MonitorSettings
from .csv_log import CsvLog
from .dashboard import Dashboard, MonitorState
from .segmenter import Segmenter
from .sinks import make_sink
from .worker import InferenceWorker, Job


class Pipeline:
    """Opens the CSV log (if configured) and starts the worker; `screen` is the dashboard's
    context (a no-op without one). `close()` drains the worker and closes the log; both idempotent."""

    def __init__(
        self,
        predictor: Predictor,
        monitor: MonitorSettings,
        console: Console,
        dashboard: bool,
        drop_oldest: bool,
        stream_start: Callable[[], datetime | None] | None = None,
    ) -> None:
        self.log = CsvLog(monitor.csv, predictor.emotions) if monitor.csv else None
        self.state = MonitorState(predictor.emotions) if dashboard else None
        sink = make_sink(self.log, None if dashboard else console, stream_start, self.state)
        self.worker = InferenceWorker(predictor, sink, monitor.queue_size, monitor.max_batch, drop_oldest).start()
        self.screen = Dashboard(self.state, console) if self.state is not None else contextlib.nullcontext()

    def feed(self, source: str, seg: Segmenter, block: np.ndarray, lost: int | None = None) -> None:
        """One block of audio: completed segments go to the worker; the dashboard sees the input."""
        for s in seg.push(block):
            self.worker.submit(Job(source, s))
        if self.state is not None:
            self.state.set_input(seg.state, seg.level, self.worker.queue.qsize(), seg.background_dbfs, lost)

    def flush(self, source: str, seg: Segmenter) -> None:
        """End of a source: its open segment, if long enough, goes to the worker too."""
        last = seg.finish()
        if last is not None:
            self.worker.submit(Job(source, last))

    def drain(self) -> None:
        """Finish every queued segment; the dashboard's queue count follows."""
        self.worker.close()
        if self.state is not None:
            self.state.set_queue(self.worker.queue.qsize())

    def close(self) -> None:
        self.drain()
        if self.log is not None:
            self.log.close()
