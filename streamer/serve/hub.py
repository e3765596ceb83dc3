"""The streams of `emomon serve` and the inference workers they share: each stream's audio
state (`Stream`), and the `Hub` that bridges the worker threads to the event loop (results
back to their stream's outbox, in order), with the server's metrics.

With `--workers N` there are N model processes, each with its own worker thread and queue
(a share of [serve] queue_size); a new stream goes to the one with the fewest open streams
and stays there, since its normalisation session lives in that process."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...model.audio import from_pcm16
from ..audio.stream import AudioStream, Cut
from ..outputs.record import WS_SHARE_DIGITS, Row
from .model_process import ModelProcess
from .settings import ServeSettings

if TYPE_CHECKING:
    from ...model.interface import Engine
    from ...model.tracker import SpeakerSettings
    from ..audio.segmenter import VadSettings
    from ..outputs.record import Result
    from ..outputs.settings import OutputSettings

log = logging.getLogger("emomon")


class Stream:
    """One client's audio: its AudioStream (resampler, segmenter, interim clock); results
    queue in `outbox`."""

    def __init__(self, sid: int, rate: int, vad: VadSettings, interim_s: float) -> None:
        self.id, self.key, self.rate = sid, f"stream-{sid}", rate
        self.worker = 0  # which model process scores it (Hub.open)
        self.cuts = AudioStream(vad, rate, interim_s=interim_s)
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.pending = 0  # final segments submitted, result not yet in the outbox
        self.idle = asyncio.Event()
        self.idle.set()
        self.samples_in = 0  # at the client's rate
        self.started = time.monotonic()

    def audio(self, pcm: bytes) -> np.ndarray:
        x = from_pcm16(pcm)
        self.samples_in += len(x)
        return x

    def ahead_s(self, max_speed: float) -> float:
        """How long to wait before reading more so that audio arrives at most max_speed x real time."""
        return self.samples_in / self.rate / max_speed - (time.monotonic() - self.started)


def message(result: Result, emotions: tuple[str, ...]) -> dict[str, Any]:
    """A result as the WebSocket message (outputs/record.py's table, record w)."""
    return Row.of(result).to_json("w", emotions, WS_SHARE_DIGITS)


class Hub:
    """The streams and the workers; the bridge from the worker threads to the event loop."""

    def __init__(
        self,
        predictors: Engine | list[Engine],
        settings: ServeSettings,
        vad: VadSettings,
        outputs: OutputSettings,
        max_batch: int,
        speakers: SpeakerSettings | None = None,
    ) -> None:
        """`predictors`: one engine per worker (a model process each with --workers);
        `max_batch`: [runtime]'s, a worker's segments per model call."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from ..monitor.worker import InferenceWorker
        from ..outputs.sinks import Outputs

        self.predictors = predictors if isinstance(predictors, list) else [predictors]
        self.predictor = self.predictors[0]  # name and emotions: the same bundle in every one
        self.settings, self.vad, self.outputs = settings, vad, outputs
        self.streams: dict[str, Stream] = {}
        self.next_id = 1
        self.closing = False  # SIGTERM or SIGINT: no new streams; open ones finish and close with 1001
        self.closing_event: asyncio.Event | None = None  # set in the loop, wakes every stream's reader
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()  # self.streams is read by the worker threads
        self.registry = CollectorRegistry()
        Gauge("emomon_streams", "Open streams", registry=self.registry).set_function(lambda: len(self.streams))
        self.m_opened = Counter("emomon_streams_opened", "Streams accepted", registry=self.registry)
        self.m_segments = Counter("emomon_segments", "Segments by status", ["status"], registry=self.registry)
        self.m_interim = Counter("emomon_interim", "Interim results sent", registry=self.registry)
        self.m_refused = Counter(
            "emomon_refused", "Streams refused or closed by the server, by reason", ["reason"], registry=self.registry
        )
        self.m_latency = Histogram(
            "emomon_latency_seconds", "Segment complete -> result ready", registry=self.registry,
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
        )  # fmt: skip
        self.speakers = None  # with [speakers]: every stream tracks its own speakers
        if speakers is not None and speakers.enabled:
            from ...model.tracker import Speakers

            self.speakers = Speakers(speakers)
        self.fatal = ""  # a model process keeps dying: the server stops with this sentence
        self.stop_server: Callable[[], None] | None = None  # set by serve(): a graceful stop, as SIGTERM
        for predictor in self.predictors:
            if isinstance(predictor, ModelProcess):  # supervised: it says when it gives up
                predictor.on_fatal = self._model_lost
        Gauge("emomon_model_up", "1 while every model (process) is ready", registry=self.registry).set_function(
            lambda: float(self.model_health()["up"])
        )  # fmt: skip
        Gauge("emomon_model_restarts", "Model processes started after one died", registry=self.registry
              ).set_function(lambda: self.model_health()["restarts"])  # fmt: skip
        Gauge("emomon_workers", "Model processes (--workers)", registry=self.registry).set(len(self.predictors))
        self.logs = Outputs.open(outputs, self.predictor.emotions, save_audio=False, streams=True,
                                 speakers=self.speakers is not None)  # fmt: skip
        share = max(1, -(-settings.queue_size // len(self.predictors)))  # each worker's part of the queue
        self.workers = [
            InferenceWorker(p, self._on_result, share, max_batch, drop_oldest=True, speakers=self.speakers).start()
            for p in self.predictors
        ]
        self.assigned = [0] * len(self.workers)  # open streams per worker
        queued = Gauge("emomon_queue", "Segments waiting for the model (drops start when it is full)",
                       registry=self.registry)  # fmt: skip
        queued.set_function(lambda: sum(w.queue.qsize() for w in self.workers))
        Gauge("emomon_queue_size", "Capacity of that queue", registry=self.registry).set(share * len(self.workers))

    def model_health(self) -> dict[str, Any]:
        """Up while every model process is; restarts summed over them."""
        each = [p.health() for p in self.predictors]
        return {"up": all(h["up"] for h in each), "restarts": sum(h["restarts"] for h in each)}

    def totals(self) -> dict[str, int]:
        """Segments processed, dropped and failed over every worker."""
        return {k: sum(getattr(w, k) for w in self.workers) for k in ("processed", "dropped", "failed")}

    # -- worker thread -------------------------------------------------------------------
    def _on_result(self, result: Result) -> None:
        """The stream first, then the logs (each of which fails alone: outputs/sinks.py)."""
        with self.lock:
            stream = self.streams.get(result.job.source)
        if stream is not None and self.loop is not None:  # a closed stream's results go nowhere
            self.loop.call_soon_threadsafe(self._deliver, stream, result)
        self.logs(result)
        if result.job.interim:
            self.m_interim.inc()
        else:
            self.m_segments.labels(result.status).inc()
            if result.status == "ok" and result.latency_ms is not None:
                self.m_latency.observe(result.latency_ms / 1e3)

    def _model_lost(self, sentence: str) -> None:
        """The model process's crash loop (its supervisor's thread): stop as on SIGTERM, exit 2."""
        self.fatal = sentence
        if self.stop_server is not None:
            self.stop_server()

    # -- event loop ----------------------------------------------------------------------
    def _deliver(self, stream: Stream, result: Result) -> None:
        stream.outbox.put_nowait(message(result, self.predictor.emotions))
        if not result.job.interim and result.job.last:
            stream.pending -= 1
            if stream.pending <= 0:
                stream.idle.set()

    def open(self, rate: int) -> Stream:
        stream = Stream(self.next_id, rate, self.vad, self.outputs.interim_s)
        self.next_id += 1
        stream.worker = min(range(len(self.workers)), key=lambda i: (self.assigned[i], i))  # the least loaded
        self.assigned[stream.worker] += 1
        with self.lock:
            self.streams[stream.key] = stream
        self.m_opened.inc()
        return stream

    def close(self, stream: Stream) -> None:
        with self.lock:
            self.streams.pop(stream.key, None)
        self.assigned[stream.worker] -= 1
        self.workers[stream.worker].forget(stream.key)
        self.predictors[stream.worker].end_session(stream.key)
        if self.speakers is not None:
            self.speakers.forget(stream.key)

    def feed(self, stream: Stream, cuts: list[Cut]) -> None:
        """A stream's cuts to its worker: `stream.cuts.push(audio)`, or `finish()` at its end.
        Runs on the event loop, as the results' delivery does: `pending` counts before any of
        them can come back."""
        finals = self.workers[stream.worker].submit_cuts(stream.key, cuts, stream.id)  # the live policy: never blocks
        if finals:
            stream.pending += finals
            stream.idle.clear()

    def health(self) -> dict[str, Any]:
        model = self.model_health()
        status = "closing" if self.closing else "ok" if model["up"] else "degraded"
        return {
            "status": status,
            "model": self.predictor.name,
            "emotions": list(self.predictor.emotions),
            "streams": len(self.streams),
            "model_process": {
                "up": model["up"],
                "restarts": model["restarts"],
                "workers": len(self.workers),
                "streams": list(self.assigned),
            },  # fmt: skip
        }

    def shutdown(self) -> None:
        for w in self.workers:
            w.close()
        self.logs.close()
