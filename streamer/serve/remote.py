"""The scorer of `emomon live --server URL` and `emomon replay --server URL`: the local
microphone or a file streamed to an `emomon serve`, through the same live/replay loop,
dashboard, plain lines, CSV and JSON Lines as a local run (monitor/pipeline.py).

A sender (this thread) turns 16 kHz blocks into 16-bit PCM messages; a receiver thread
turns the server's `segment` and `interim` messages into the monitor's own results for
the usual outputs. The server cuts the segments, so the client has no VAD of its own and
no segment audio (`--save-audio` is refused with `--server`).
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urlencode, urlsplit

import numpy as np

from ...model.audio import SAMPLE_RATE, to_pcm16
from ...model.errors import EmomonError
from ..audio.stream import Resampler
from ..monitor.pipeline import Counts, Display
from ..outputs.record import Row


class ServerError(EmomonError):
    """The server refused the stream, sent an error or went away."""


def stream_url(server: str) -> str:
    """The stream endpoint of `server`. The token goes in a header, never in the address,
    where proxies and access logs would keep it."""
    parts = urlsplit(server)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ServerError(f"--server {server!r} is not a ws:// or wss:// address (for example ws://127.0.0.1:8765).")
    return f"{parts.scheme}://{parts.netloc}/v1/stream?{urlencode({'sample_rate': SAMPLE_RATE})}"


class RemoteStream:
    """One stream to the server; its records (Row) go to `on_result` from the receiver thread."""

    def __init__(self, server: str, token: str | None, source: str, on_result) -> None:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self.source, self.on_result = source, on_result
        self.processed = self.dropped = self.failed = self.interim = 0
        self.error = ""
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else None
            self.ws = connect(stream_url(server), additional_headers=headers, max_size=None, open_timeout=20,
                              compression=None)  # fmt: skip
            ready = json.loads(self.ws.recv(timeout=20))
        except InvalidStatus as e:
            code = e.response.status_code
            why = "the token is missing or wrong" if code in (401, 403) else f"HTTP {code}"
            raise ServerError(f"Server {server} refused the stream: {why}.") from e
        except (OSError, TimeoutError, WebSocketException) as e:
            raise ServerError(f"Cannot stream to {server}: {e}.") from e
        if ready.get("type") != "ready":
            raise ServerError(f"Server {server}: {ready.get('message', ready)}")
        self.emotions = tuple(ready["emotions"])
        self.model, self.stream = ready["model"], ready["stream"]
        self.done = threading.Event()
        self._reader = threading.Thread(target=self._read, name="emomon-remote", daemon=True)
        self._reader.start()

    def send(self, block: np.ndarray) -> None:
        from websockets.exceptions import WebSocketException

        if self.done.is_set():
            raise ServerError(f"The server closed the stream: {self.error or 'connection lost'}.")
        pcm = to_pcm16(block).tobytes()
        try:
            self.ws.send(pcm)  # blocks while the server reads slower (its back-pressure)
        except WebSocketException as e:
            self.done.wait(5)
            raise ServerError(f"The server closed the stream: {self.error or e}.") from e

    def finish(self, timeout: float = 120.0) -> None:
        """Ask for the remaining results and wait for them."""
        from websockets.exceptions import WebSocketException

        try:
            self.ws.send(json.dumps({"type": "end"}))
        except WebSocketException:
            pass
        self.done.wait(timeout)
        self.ws.close()
        if self.error:
            raise ServerError(f"The server closed the stream: {self.error}")

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in self.ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind in ("segment", "interim"):
                    self.on_result(self._result(msg))
                elif kind == "error":
                    self.error = msg.get("message", "error")
                elif kind == "end":
                    break
        except ConnectionClosed as e:
            if e.rcvd is not None and e.rcvd.code not in (1000, 1001) and not self.error:
                self.error = f"closed with code {e.rcvd.code}"
        finally:
            self.done.set()

    def _result(self, msg: dict) -> Row:
        """The server's message (outputs/record.py's table, record w) as this client's record."""
        row = Row.from_json(msg, self.source, self.emotions)
        if not row.interim:
            self.processed += row.status == "ok"
            self.dropped += row.status == "dropped"
            self.failed += row.status == "error"
        else:
            self.interim += 1
        return row


class RemoteScorer:
    """The monitor's Scorer (monitor/pipeline.py) for --server: each stream is a WebSocket to
    the server, which cuts and scores it; results come back to the Display."""

    def __init__(self, server: str, token: str | None, display: Display) -> None:
        if display.settings.save_audio:
            raise ServerError("--save-audio needs the segments' audio, which stays on the server with --server.")
        self.server, self.token, self.display = server, token, display
        self.streams: list[RemoteStream] = []

    def open(self, source: str, rate: int, each: bool = False) -> RemoteFeed:
        if each:
            raise ServerError("replay --channels each runs where the model runs, not with --server.")
        remote = RemoteStream(self.server, self.token, source, self.display.write)
        describe = {"model": f"{remote.model} @ {self.server}", "emotions": f"{len(remote.emotions)} emotions"}
        self.display.open(remote.emotions, describe, speakers=False, save_audio=False)
        self.streams.append(remote)
        return RemoteFeed(remote, self.display, Resampler(rate))

    def drain(self) -> None:
        """Nothing waits here: each stream's finish() waited for its results."""

    def counts(self) -> Counts:
        s = self.streams
        return Counts(sum(r.processed for r in s), sum(r.dropped for r in s), sum(r.failed for r in s),
                      sum(r.interim for r in s))  # fmt: skip

    def close(self) -> None:
        for r in self.streams:
            r.ws.close()


class RemoteFeed:
    """A stream sent as 16 kHz PCM (the stream's own resampler, audio/stream.py): the rate
    every server takes, and a third of a 48 kHz device's bytes."""

    def __init__(self, remote: RemoteStream, display: Display, resampler: Resampler) -> None:
        self.remote, self.display, self.resampler = remote, display, resampler

    def push(self, block: np.ndarray, lost: int | None = None) -> None:
        self.remote.send(self.resampler.push(block))
        if self.display.state is not None:  # the dashboard's meter
            level = float(np.sqrt(np.mean(block**2))) if len(block) else 0.0
            self.display.set_input("server", level, 0, -100.0, lost, self.remote.source)

    def finish(self) -> None:
        tail = self.resampler.finish()
        if len(tail):
            self.remote.send(tail)
        self.remote.finish()

    def lost(self, start_s: float, end_s: float, why: str) -> None:
        self.display.lost(self.remote.source, start_s, end_s, why)  # silence went to the server in its place
