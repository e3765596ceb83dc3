"""The inference worker: one thread that owns the Predictor.

Segments arrive on a bounded queue. The worker takes the first one waiting, adds what
else is queued (up to `max_batch`), runs them through the model together and hands each
result to `on_result` from its own thread (the CSV log and the dashboard state are
written only here). Two policies when the queue is full:

- `drop_oldest=True` (live): the microphone must never wait, so the oldest waiting
  segment is dropped and reported with status "dropped" (counted, logged, never silent);
- `drop_oldest=False` (replay): the producer waits (back-pressure), nothing is dropped.

A change of `source` between segments starts a new normalisation session.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model.predictor import Prediction, Predictor
from .segmenter import Segment

log = logging.getLogger("emomon")


@dataclass
class Job:
    source: str
    segment: Segment
    ready: float = field(default_factory=time.perf_counter)  # when the segment was complete


@dataclass
class Result:
    job: Job
    status: str  # ok | dropped | error
    prediction: Prediction | None = None
    error: str = ""
    latency_ms: float | None = None  # segment complete -> prediction ready
    queue_ms: float | None = None  # of which waiting in the queue


class InferenceWorker:
    def __init__(
        self,
        predictor: Predictor,
        on_result: Callable[[Result], None],
        queue_size: int = 8,
        max_batch: int = 8,
        drop_oldest: bool = False,
    ) -> None:
        self.predictor, self.on_result = predictor, on_result
        self.max_batch, self.drop_oldest = max_batch, drop_oldest
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.processed = self.dropped = self.failed = 0
        self._source: str | None = None
        self._dropped_results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="emomon-worker", daemon=True)

    def start(self) -> InferenceWorker:
        self._thread.start()
        return self

    def submit(self, job: Job) -> None:
        """Queue a segment: blocks when full (replay), or drops the oldest waiting one (live)."""
        if not self.drop_oldest:
            self.queue.put(job)
            return
        while True:
            try:
                self.queue.put_nowait(job)
                return
            except queue.Full:
                try:
                    old = self.queue.get_nowait()
                except queue.Empty:
                    continue
                self.dropped += 1
                self._dropped_results.put(Result(old, "dropped", error="model busy: queue full"))

    def close(self, timeout: float = 60.0) -> None:
        """Finish everything queued, then stop the thread. Idempotent."""
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the inference worker did not finish within %.0f s", timeout)
        self._report_dropped()

    def _report_dropped(self) -> None:
        while True:
            try:
                self.on_result(self._dropped_results.get_nowait())
            except queue.Empty:
                return

    def _run(self) -> None:
        while True:
            self._report_dropped()
            try:
                first = self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            for _, run in itertools.groupby(batch, key=lambda j: j.source):  # one session per call
                self._process(list(run))

    def _process(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        if batch[0].source != self._source:
            self.predictor.reset_session()
            self._source = batch[0].source
        try:
            predictions = self.predictor.predict([j.segment.audio for j in batch])
        except Exception as e:  # noqa: BLE001 - one bad segment must not end the run; it is logged as an error row
            log.warning("inference failed for %d segment(s) of %s: %s", len(batch), batch[0].source, e)
            for j in batch:
                self.failed += 1
                self.on_result(Result(j, "error", error=str(e)))
            return
        done = time.perf_counter()
        for j, p in zip(batch, predictions):
            self.processed += 1
            self.on_result(Result(j, "ok", p, latency_ms=(done - j.ready) * 1e3, queue_ms=(started - j.ready) * 1e3))
