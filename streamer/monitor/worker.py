"""The inference worker: one thread that owns the Predictor.

Segments arrive on a bounded queue. The worker takes the first one waiting, adds what
else is queued (up to `max_batch`), runs them through the model together and hands each
result to `on_result` from its own thread (the CSV log and the dashboard state are
written only here). Two policies when the queue is full:

- `drop_oldest=True` (live): the microphone must never wait, so the oldest waiting
  segment is dropped and reported with status "dropped" (counted, logged, never silent);
- `drop_oldest=False` (replay): the producer waits (back-pressure), nothing is dropped.

With a speaker stage ([speakers] enabled: model/tracker.py), each segment is first cut where
its speaker changes, and every part is scored on its own and named (`Job.speaker`).

Each `source` (a file, the microphone, a server stream) is its own normalisation session,
or, with speakers, each speaker in it.
Segments of different sources share one model call unless the model adapts to its session
("speaker"-mode normalisation), so that a server batches across its streams.

Interim work (the audio so far of a segment still open, [outputs] interim_s) waits in a
slot of its own, never in the queue: it runs only when no final segment waits, a newer
interim replaces an older one, and an interim whose segment has meanwhile closed is
thrown away; each of those is counted in `interim_skipped`. An interim result never
updates a speaker-adaptive model's session statistics (the final segment will).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..outputs.record import Job, Result
from ..scoring import score, split_by_speaker

if TYPE_CHECKING:
    from ...model.interface import Engine
    from ...model.tracker import Speakers
    from ..audio.stream import Cut

log = logging.getLogger("emomon")


class InferenceWorker:
    def __init__(
        self,
        predictor: Engine,
        on_result: Callable[[Result], None],
        queue_size: int = 8,
        max_batch: int = 8,
        drop_oldest: bool = False,
        speakers: Speakers | None = None,
    ) -> None:
        self.predictor, self.on_result, self.speakers = predictor, on_result, speakers
        self.max_batch, self.drop_oldest = max_batch, drop_oldest
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.processed = self.dropped = self.failed = 0
        self.interim_done = self.interim_skipped = 0
        self._interim: Job | None = None  # the one interim job waiting, newest wins
        self._closed: dict[str, int] = {}  # source -> highest segment index submitted as final; forget() drops it
        self._lock = threading.Lock()
        self._output_error = self._speaker_error = ""
        self._dropped_results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="emomon-worker", daemon=True)

    def start(self) -> InferenceWorker:
        self._thread.start()
        return self

    def submit_interim(self, job: Job) -> None:
        """Offer an interim job; it replaces (and counts as skipped) one still waiting."""
        with self._lock:
            if self._interim is not None:
                self.interim_skipped += 1
            self._interim = job

    def _take_interim(self) -> Job | None:
        with self._lock:
            job, self._interim = self._interim, None
            if job is not None and job.segment.index <= self._closed.get(job.source, -1):
                self.interim_skipped += 1  # its segment closed meanwhile: the final result says more
                return None
            return job

    def forget(self, source: str) -> None:
        """A source has ended (a serve stream closed): drop what the worker kept of it, so that
        a server that sees many short streams does not grow."""
        with self._lock:
            self._closed.pop(source, None)
            if self._interim is not None and self._interim.source == source:
                self._interim = None

    def submit(self, job: Job) -> None:
        """Queue a segment: blocks when full (replay), or drops the oldest waiting one (live)."""
        with self._lock:
            self._closed[job.source] = max(job.segment.index, self._closed.get(job.source, -1))
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

    def submit_cuts(self, source: str, cuts: list[Cut], stream: int | None = None) -> int:
        """A stream's cuts (audio/stream.py) as jobs: finals queued, interim ones offered; a
        file's channel (`each`) is its speaker, "channel N". Returns how many finals went in."""
        finals = 0
        for cut in cuts:
            speaker = None if cut.channel is None else f"channel {cut.channel}"
            job = Job(source, cut.segment, interim=cut.interim, stream=stream, speaker=speaker, channel=cut.channel)
            if cut.interim:
                self.submit_interim(job)
            else:
                self.submit(job)
                finals += 1
        return finals

    def close(self, timeout: float = 60.0) -> None:
        """Finish everything queued, then stop the thread. Idempotent."""
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the inference worker did not finish within %.0f s", timeout)
        self._report_dropped()

    def _deliver(self, result: Result) -> None:
        """Hand a result to the outputs; an output that fails is said once and the run goes on."""
        try:
            self.on_result(result)
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the model or lose the other outputs
            if str(e) != self._output_error:
                self._output_error = str(e)
                log.warning("Writing the result of segment %d failed (%s); the monitor goes on.",
                            result.job.segment.index, e)  # fmt: skip

    def _report_dropped(self) -> None:
        while True:
            try:
                self._deliver(self._dropped_results.get_nowait())
            except queue.Empty:
                return

    def _run(self) -> None:
        while True:
            self._report_dropped()
            try:
                first = self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    with self._lock:  # shutting down: an interim result is not worth the wait
                        self.interim_skipped += self._interim is not None
                        self._interim = None
                    return
                interim = self._take_interim()
                if interim is not None:
                    self._process_interim(interim)
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if self.speakers is not None:
                batch = self._split_by_speaker(batch)
            results = score(self.predictor, batch)
            failed = [r for r in results if r.status != "ok"]
            if failed:  # logged as error rows too
                log.warning("inference failed for %d segment(s) of %s: %s", len(failed), failed[0].job.source,
                            failed[0].error)  # fmt: skip
            self.processed += len(results) - len(failed)
            self.failed += len(failed)
            for result in results:
                self._deliver(result)

    def _split_by_speaker(self, batch: list[Job]) -> list[Job]:
        """split_by_speaker (scoring.py); should the speaker stage fail, the segments go on
        unnamed: the emotions matter more."""
        try:
            return split_by_speaker(self.speakers, batch)
        except Exception as e:  # noqa: BLE001 - a speaker embedding must not cost the emotion results
            if str(e) != self._speaker_error:
                self._speaker_error = str(e)
                log.warning("Telling speakers apart failed (%s); these segments go on without a speaker.", e)
            return [replace(j, speaker="") for j in batch]

    def _process_interim(self, job: Job) -> None:
        [result] = score(self.predictor, [job], update_session=False)
        if result.status != "ok":  # an interim result is optional; the final one will say
            log.info("interim inference failed for %s: %s", job.source, result.error)
            return
        self.interim_done += 1
        self._deliver(result)
