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

The parts: the streams and the worker they share (hub.py), one WebSocket stream's protocol
(session.py), the routes and the Host check (app.py), and here the process: binding, the
uvicorn server with emomon's graceful stop. Starlette, uvicorn and prometheus-client load
when the server starts; the [serve] table is settings.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING

from ...model.errors import ConfigError, EmomonError
from ..net import is_loopback
from .app import create_app
from .hub import Hub
from .session import MAX_MESSAGE_BYTES
from .settings import ServeSettings

if TYPE_CHECKING:
    from ...model.interface import Engine
    from ...model.tracker import SpeakerSettings
    from ..audio.segmenter import VadSettings
    from ..outputs.settings import OutputSettings

log = logging.getLogger("emomon")


def check_bind(settings: ServeSettings) -> None:
    """A server reachable from other machines must ask for a token."""
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"Refusing to serve on {settings.host} without a token: set --token (or [serve] token), or bind 127.0.0.1."
        )


def serve(
    predictor: Engine | list[Engine],
    settings: ServeSettings,
    vad: VadSettings,
    outputs: OutputSettings,
    max_batch: int,
    console,
    speakers: SpeakerSettings | None = None,
) -> int:
    """Run the server until SIGINT or SIGTERM: then stop accepting, finish the queued
    segments, send them, close every stream with 1001, and exit 0."""
    import uvicorn

    check_bind(settings)
    hub = Hub(predictor, settings, vad, outputs, max_batch, speakers)
    predictor = hub.predictor
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
        + (f", {len(hub.predictors)} model processes" if len(hub.predictors) > 1 else "")
        + (", token required)" if settings.token else ")"),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    try:
        server.run()
    finally:
        hub.shutdown()
        for p in hub.predictors:
            p.close()
    n = hub.totals()
    console.print(f"{n['processed']} segment(s), {n['dropped']} dropped, {n['failed']} failed, "
                  f"{hub.next_id - 1} stream(s)")  # fmt: skip
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
