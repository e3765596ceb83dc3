"""`emomon serve`: a streaming emotion API over WebSockets, many streams on one model.

Each WebSocket stream gets its own resampler, VAD segmenter and interim clock; all streams'
segments go to the one inference worker (worker.py), which batches what waits across
streams and drops the oldest when it falls behind. Results go back to their stream in
order through that stream's outbox. Protocol (docs/serve.md):

    GET /healthz                      {"status": "ok" | "degraded" (503) | "closing", "model", "emotions",
                                       "streams", "model_process": {"up", "restarts"}}
    GET /metrics                      Prometheus text
    GET /                             the browser page (microphone -> this API)
    WS  /v1/stream?sample_rate=16000  binary: s16le mono PCM; text: {"type": "end"}
                                      server -> client: ready, segment, interim, error, end

Bounds: a binary message holds at most 1 MiB; a stream's audio is read at most
`max_speed` x real time (faster clients wait: TCP back-pressure); at most `max_streams`
streams; the model queue holds `queue_size` segments over all streams; a stream's end
waits at most `model_timeout_s` for its results.

Requests are checked in this order: the Host header (loopback names, IP addresses and
[serve] allow_hosts: a page rebound by DNS to this machine still names its own host), the
Origin (the server's own page and [serve] origins), the token, then the stream's
parameters.

The model runs in a supervised child process (model_process.py): when it dies, the
segments it held get error results, a new one starts and the streams go on; `/healthz`
answers 503 while none is ready; a crash loop stops the server (exit 2).

Starlette, uvicorn and prometheus-client load in `serve()`; the [serve] table is settings.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from ...model.audio import SAMPLE_RATE
from ...model.errors import ConfigError, EmomonError
from ..audio.stream import AudioStream, Cut
from ..net import is_ip_address, is_loopback
from ..outputs.record import WS_SHARE_DIGITS, Row
from .settings import ServeSettings

if TYPE_CHECKING:
    from ...model.predictor import Predictor
    from ...model.tracker import SpeakerSettings
    from ..audio.segmenter import VadSettings
    from ..monitor.settings import MonitorSettings
    from ..outputs.record import Result

log = logging.getLogger("emomon")

MAX_MESSAGE_BYTES = 1 << 20  # one binary message: 1 MiB, about 33 s at 16 kHz
RATES = (8000, 48000)  # accepted sample rates, inclusive
RATE_TEXT = re.compile(r"[0-9]{1,6}")  # sample_rate as ASCII digits, parsed before accept()
PAGE = Path(__file__).resolve().parent / "web" / "index.html"


def check_bind(settings: ServeSettings) -> None:
    """A server reachable from other machines must ask for a token."""
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"Refusing to serve on {settings.host} without a token: set --token (or [serve] token), or bind 127.0.0.1."
        )


class Stream:
    """One client's audio: its AudioStream (resampler, segmenter, interim clock); results
    queue in `outbox`."""

    def __init__(self, sid: int, rate: int, vad: VadSettings, interim_s: float) -> None:
        self.id, self.key, self.rate = sid, f"stream-{sid}", rate
        self.cuts = AudioStream(vad, rate, interim_s=interim_s)
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.pending = 0  # final segments submitted, result not yet in the outbox
        self.idle = asyncio.Event()
        self.idle.set()
        self.samples_in = 0  # at the client's rate
        self.started = time.monotonic()

    def audio(self, pcm: bytes) -> np.ndarray:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        self.samples_in += len(x)
        return x

    def ahead_s(self, max_speed: float) -> float:
        """How long to wait before reading more so that audio arrives at most max_speed x real time."""
        return self.samples_in / self.rate / max_speed - (time.monotonic() - self.started)


def message(result: Result, emotions: tuple[str, ...]) -> dict[str, Any]:
    """A result as the WebSocket message (outputs/record.py's table, record w)."""
    return Row.of(result).to_json("w", emotions, WS_SHARE_DIGITS)


class Hub:
    """The streams and the one worker; the bridge from the worker thread to the event loop."""

    def __init__(
        self,
        predictor: Predictor,
        settings: ServeSettings,
        vad: VadSettings,
        monitor: MonitorSettings,
        speakers: SpeakerSettings | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from ..monitor.worker import InferenceWorker
        from ..outputs.record import Job
        from ..outputs.sinks import Outputs

        self.predictor, self.settings, self.vad, self.monitor = predictor, settings, vad, monitor
        self.streams: dict[str, Stream] = {}
        self.next_id = 1
        self.closing = False  # SIGTERM or SIGINT: no new streams; open ones finish and close with 1001
        self.closing_event: asyncio.Event | None = None  # set in the loop, wakes every stream's reader
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()  # self.streams is read by the worker thread
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
        self.fatal = ""  # the model process keeps dying: the server stops with this sentence
        self.stop_server: Callable[[], None] | None = None  # set by serve(): a graceful stop, as SIGTERM
        if hasattr(predictor, "health"):  # the supervised model process (model_process.py)
            predictor.on_fatal = self._model_lost
            Gauge("emomon_model_up", "1 while a model process is ready", registry=self.registry).set_function(
                lambda: float(predictor.health()["up"])
            )  # fmt: skip
            Gauge("emomon_model_restarts", "Model processes started after one died", registry=self.registry
                  ).set_function(lambda: predictor.health()["restarts"])  # fmt: skip
        self.logs = Outputs.open(monitor, predictor.emotions, save_audio=False, streams=True,
                                 speakers=self.speakers is not None)  # fmt: skip
        self.Job = Job  # the worker's job type, without an import on every audio message
        self.worker = InferenceWorker(
            predictor, self._on_result, settings.queue_size, settings.max_batch, drop_oldest=True,
            speakers=self.speakers,
        ).start()  # fmt: skip
        queued = Gauge("emomon_queue", "Segments waiting for the model (drops start when it is full)",
                       registry=self.registry)  # fmt: skip
        queued.set_function(self.worker.queue.qsize)
        Gauge("emomon_queue_size", "Capacity of that queue", registry=self.registry).set(settings.queue_size)

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
        stream = Stream(self.next_id, rate, self.vad, self.monitor.interim_s)
        self.next_id += 1
        with self.lock:
            self.streams[stream.key] = stream
        self.m_opened.inc()
        return stream

    def close(self, stream: Stream) -> None:
        with self.lock:
            self.streams.pop(stream.key, None)
        self.worker.forget(stream.key)
        self.predictor.end_session(stream.key)
        if self.speakers is not None:
            self.speakers.forget(stream.key)

    def feed(self, stream: Stream, cuts: list[Cut]) -> None:
        """A stream's cuts to the worker: `stream.cuts.push(audio)`, or `finish()` at its end."""
        Job = self.Job
        for cut in cuts:
            job = Job(stream.key, cut.segment, interim=cut.interim, stream=stream.id)
            if cut.interim:
                self.worker.submit_interim(job)
                continue
            stream.pending += 1
            stream.idle.clear()
            self.worker.submit(job)

    def health(self) -> dict[str, Any]:
        model = self.predictor.health() if hasattr(self.predictor, "health") else {"up": True, "restarts": 0}
        status = "closing" if self.closing else "ok" if model["up"] else "degraded"
        return {
            "status": status,
            "model": self.predictor.name,
            "emotions": list(self.predictor.emotions),
            "streams": len(self.streams),
            "model_process": {"up": model["up"], "restarts": model["restarts"]},
        }

    def shutdown(self) -> None:
        self.worker.close()
        self.logs.close()


def create_app(hub: Hub):
    """The Starlette application: routes over the hub."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def healthz(request):
        health = hub.health()
        return JSONResponse(health, status_code=503 if health["status"] == "degraded" else 200)

    async def metrics(request):
        return Response(generate_latest(hub.registry), media_type=CONTENT_TYPE_LATEST)

    async def page(request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def stream_endpoint(ws: WebSocket) -> None:
        await StreamSession(hub, ws).run()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/stream", stream_endpoint),
        ]
    )
    return HostGuard(app, hub)


def host_allowed(host_header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Host names this server: a loopback name, an IP address (a page
    can only send one by being served from that address), or one of `allowed` ("*": any).
    A page that DNS rebinding moved onto this machine sends its own name, and is refused."""
    if "*" in allowed:
        return True
    try:
        host = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:  # a malformed bracket or port
        return False
    return bool(host) and (is_loopback(host) or is_ip_address(host) or host in {h.lower() for h in allowed})


class HostGuard:
    """ASGI middleware: a request whose Host is not allowed gets 403 (a WebSocket is refused
    before its handshake completes), before any route, Origin or token check."""

    def __init__(self, app, hub: Hub) -> None:
        self.app, self.hub = app, hub

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not host_allowed(host, self.hub.settings.allow_hosts):
                self.hub.m_refused.labels("host").inc()
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = f"Host {host[:80]!r} is not one this server answers to ([serve] allow_hosts).".encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class StreamSession:
    """One WebSocket connection from handshake to close."""

    def __init__(self, hub: Hub, ws) -> None:
        self.hub, self.ws = hub, ws

    def _origin_allowed(self) -> bool:
        """A browser always says which page opens the socket. Only the server's own page (the
        origin's host is the Host it asked for, which HostGuard has checked) and [serve] origins
        may: another site the user visits must not stream through this server."""
        origin = self.ws.headers.get("origin")
        allowed = self.hub.settings.origins
        if origin is None or "*" in allowed or origin.rstrip("/") in allowed:
            return True
        return urlsplit(origin).netloc.lower() == self.ws.headers.get("host", "").lower()

    def _authorised(self) -> bool:
        token = self.hub.settings.token
        if not token:
            return True
        header = self.ws.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else self.ws.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    async def _refuse(self, code: int, text: str, reason: str) -> None:
        """After the handshake: one error message naming the problem, then close `code`."""
        self.hub.m_refused.labels(reason).inc()
        await self.ws.send_json({"type": "error", "message": text})
        await self.ws.close(code)

    async def run(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        hub, ws = self.hub, self.ws
        for allowed, reason in ((self._origin_allowed, "origin"), (self._authorised, "token")):
            if not allowed():
                hub.m_refused.labels(reason).inc()
                await ws.close(1008)  # before accept: the handshake is refused (HTTP 403)
                return
        raw = ws.query_params.get("sample_rate", str(SAMPLE_RATE))
        rate = int(raw) if RATE_TEXT.fullmatch(raw) else 0  # ASCII digits only: '²' passes str.isdigit()
        await ws.accept()
        if not RATES[0] <= rate <= RATES[1]:
            await self._refuse(1008, f"sample_rate {raw[:20]!r} is not a whole number from 8000 to 48000.", "rate")
            return
        if hub.closing:
            await self._refuse(1001, "The server is shutting down.", "closing")
            return
        if len(hub.streams) >= hub.settings.max_streams:
            await self._refuse(1013, f"The server is at its limit of {hub.settings.max_streams} streams.", "full")
            return
        stream = hub.open(rate)
        sender = asyncio.create_task(self._send(stream))
        try:
            await ws.send_json({
                "type": "ready", "stream": stream.id, "model": hub.predictor.name,
                "emotions": list(hub.predictor.emotions), "sample_rate": stream.rate,
            })  # fmt: skip
            code, text, finish = await self._receive(stream)
            if finish:
                hub.feed(stream, stream.cuts.finish())  # the resampler's tail and the open segment
                wait_s = hub.settings.model_timeout_s
                try:
                    await asyncio.wait_for(stream.idle.wait(), wait_s)  # every final result is in the outbox
                except TimeoutError:
                    code, text = 1011, f"{stream.pending} segment(s) got no result within {wait_s:g} s."
                if code == 1000:
                    stream.outbox.put_nowait({"type": "end"})
            stream.outbox.put_nowait(None)
            await sender
            if text:
                await ws.send_json({"type": "error", "message": text})
            await ws.close(code)
        except WebSocketDisconnect:
            pass  # the client went away: its segments still in the queue cost one model call, no more
        finally:
            sender.cancel()
            hub.close(stream)

    async def _send(self, stream: Stream) -> None:
        while True:
            msg = await stream.outbox.get()
            if msg is None:
                return
            await self.ws.send_json(msg)

    async def _receive(self, stream: Stream) -> tuple[int, str, bool]:
        """Read until the client ends (1000), the server closes (1001), the client falls silent
        (1008) or a message is bad. Returns the close code, the error to send before it, and
        whether the stream's remaining results are sent first."""
        hub, ws = self.hub, self.ws
        idle_s = hub.settings.idle_timeout_s or None
        while True:
            wait = stream.ahead_s(hub.settings.max_speed)
            if wait > 0:  # faster than max_speed x real time: stop reading, TCP pushes back
                await asyncio.sleep(wait)
            if hub.closing:
                return 1001, "", True
            receive = asyncio.ensure_future(ws.receive())
            closing = asyncio.ensure_future(hub.closing_event.wait())
            done, _ = await asyncio.wait({receive, closing}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if receive not in done:
                receive.cancel()
                if closing in done:
                    return 1001, "", True
                hub.m_refused.labels("idle").inc()
                return 1008, f"Nothing received for {idle_s:g} s: the stream is closed to free its place.", True
            msg = receive.result()
            if msg["type"] == "websocket.disconnect":
                from starlette.websockets import WebSocketDisconnect

                raise WebSocketDisconnect(msg.get("code", 1006))
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                if len(data) > MAX_MESSAGE_BYTES:
                    why = f"A binary message holds at most {MAX_MESSAGE_BYTES} bytes; this one had {len(data)}."
                    return 1009, why, False
                if len(data) % 2:
                    return (
                        1003,
                        f"Audio must be 16-bit samples (an even number of bytes); got {len(data)} bytes.",
                        False,
                    )
                hub.feed(stream, stream.cuts.push(stream.audio(data)))
                continue
            try:
                obj = json.loads(text or "")
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj.get("type") == "end":
                return 1000, "", True
            return 1003, f'Unknown text message {text[:80]!r}: the only one is {{"type": "end"}}.', False


def serve(
    predictor: Predictor,
    settings: ServeSettings,
    vad: VadSettings,
    monitor: MonitorSettings,
    console,
    speakers: SpeakerSettings | None = None,
) -> int:
    """Run the server until SIGINT or SIGTERM: then stop accepting, finish the queued
    segments, send them, close every stream with 1001, and exit 0."""
    import uvicorn

    check_bind(settings)
    hub = Hub(predictor, settings, vad, monitor, speakers)
    app = create_app(hub)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, ws="websockets-sansio", ws_max_size=2 * MAX_MESSAGE_BYTES,
        # No permessage-deflate: PCM hardly compresses, and inflating every stream's audio cost the
        # event loop CPU on every message for nothing; results are a few hundred bytes.
        ws_per_message_deflate=False, log_level="warning", lifespan="off", timeout_graceful_shutdown=30,
    )  # fmt: skip
    server = _make_server(config, hub)
    hub.stop_server = lambda: server.handle_exit(signal.SIGTERM, None)
    console.print(
        f"emomon serve on http://{settings.host}:{settings.port} (model {predictor.name}, "
        f"{len(predictor.emotions)} emotions, up to {settings.max_streams} streams"
        + (", token required)" if settings.token else ")"),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    try:
        server.run()
    finally:
        hub.shutdown()
        close = getattr(predictor, "close", None)
        if close is not None:
            close()
    w = hub.worker
    console.print(f"{w.processed} segment(s), {w.dropped} dropped, {w.failed} failed, {hub.next_id - 1} stream(s)")
    if hub.fatal:
        raise EmomonError(hub.fatal.replace("no new one is started", "the server stopped"))
    return 0


def _make_server(config, hub: Hub):
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with emomon's shutdown: the first SIGINT/SIGTERM closes the streams
        gracefully (their remaining results, then 1001) before uvicorn stops."""

        @contextlib.contextmanager
        def capture_signals(self):
            """SIGINT/SIGTERM call handle_exit; unlike uvicorn's own, the signal is not raised
            again afterwards, so a graceful stop exits 0."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets=None) -> None:
            hub.loop = asyncio.get_running_loop()
            hub.closing_event = asyncio.Event()
            await super().startup(sockets)

        def handle_exit(self, sig, frame) -> None:
            if hub.closing or hub.loop is None:
                return super().handle_exit(sig, frame)  # a second signal: stop now
            hub.closing = True
            hub.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

        async def _drain(self) -> None:
            hub.closing_event.set()
            deadline = time.monotonic() + 30
            while hub.streams and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # each stream flushes, sends its results, closes with 1001
            self.should_exit = True

    return Server(config)
