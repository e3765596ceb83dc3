"""`emomon live --server URL` and `emomon replay --server URL`: the local microphone or a
file streamed to an `emomon serve`, with the same dashboard, plain lines, CSV and JSON
Lines from the server's results.

A sender (this thread) turns 16 kHz blocks into 16-bit PCM messages; a receiver thread
turns the server's `segment` and `interim` messages into the monitor's own results for
the usual outputs. The server cuts the segments, so the client has no VAD of its own and
no segment audio (`--save-audio` is refused with `--server`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit

import numpy as np

from ...model.audio import SAMPLE_RATE
from ...model.errors import EmomonError
from ...model.predictor import Prediction
from ..audio.segmenter import Segment
from ..outputs.record import Job, Result


class ServerError(EmomonError):
    """The server refused the stream, sent an error or went away."""


def stream_url(server: str, token: str | None) -> str:
    parts = urlsplit(server)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ServerError(f"--server {server!r} is not a ws:// or wss:// address (for example ws://127.0.0.1:8765).")
    query = {"sample_rate": SAMPLE_RATE, **({"token": token} if token else {})}
    return f"{parts.scheme}://{parts.netloc}/v1/stream?{urlencode(query)}"


class RemoteStream:
    """One stream to the server; `results` go to `on_result` from the receiver thread."""

    def __init__(self, server: str, token: str | None, source: str, on_result) -> None:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self.source, self.on_result = source, on_result
        self.processed = self.dropped = self.failed = self.interim = 0
        self.error = ""
        try:
            self.ws = connect(stream_url(server, token), max_size=None, open_timeout=20, compression=None)
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
        pcm = np.clip(np.round(block * 32768), -32768, 32767).astype("<i2").tobytes()  # the server divides by 32768
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

    def _result(self, msg: dict) -> Result:
        seg = Segment(np.zeros(0, np.float32), msg["start_s"], msg["end_s"], msg["segment"])
        job = Job(self.source, seg, interim=msg["type"] == "interim")
        job.ready = time.perf_counter() - (msg.get("latency_ms") or 0.0) / 1e3
        prediction = None
        if msg.get("shares") is not None:
            prediction = Prediction(
                shares={e: float(msg["shares"][e]) for e in self.emotions}, attention=None, attention_hop_s=0.0,
                duration_s=seg.duration_s, encoder_ms=0.0, regressor_ms=0.0, batch_size=1,
            )  # fmt: skip
        status = msg.get("status", "ok")
        if not job.interim:
            self.processed += status == "ok"
            self.dropped += status == "dropped"
            self.failed += status == "error"
        else:
            self.interim += 1
        return Result(job, status, prediction, error=msg.get("error", ""), latency_ms=msg.get("latency_ms"))


def send_blocks(remote: RemoteStream, blocks: Iterable[np.ndarray], speed: float, state=None) -> None:
    """Stream blocks (16 kHz float32), paced at `speed` x real time (0 = as fast as the server reads)."""
    t0, pos = time.perf_counter(), 0.0
    for block in blocks:
        pos += len(block) / SAMPLE_RATE
        if speed > 0:
            time.sleep(max(0.0, t0 + pos / speed - time.perf_counter()))
        remote.send(block)
        if state is not None:
            level = float(np.sqrt(np.mean(block**2))) if len(block) else 0.0
            state.set_input("server", level, 0, lost=None, source=remote.source)


class _Outputs:
    """The usual outputs, opened once the first stream has told the emotions."""

    def __init__(self, monitor, console, dashboard: bool, input_name: str, server: str, stream_start=None) -> None:
        self.monitor, self.console, self.dashboard = monitor, console, dashboard
        self.input_name, self.server, self.stream_start = input_name, server, stream_start
        self.sink = None
        self.state = None
        self.screen = None

    def open(self, remote: RemoteStream) -> None:
        import contextlib

        from ..monitor.dashboard import Dashboard, Header, MonitorState
        from ..outputs.sinks import Outputs

        if self.sink is not None:
            return
        if self.dashboard:
            header = Header(self.input_name, f"{remote.model} @ {self.server}", "", f"{len(remote.emotions)} emotions")
            self.state = MonitorState(remote.emotions, header=header)
        console = None if self.dashboard else self.console
        self.sink = Outputs.open(
            self.monitor, remote.emotions, console, self.state, self.stream_start, save_audio=False
        )
        self.screen = Dashboard(self.state, self.console) if self.state is not None else contextlib.nullcontext()
        self.screen.__enter__()

    def __call__(self, result: Result) -> None:
        self.sink(result)

    def close(self) -> None:
        if self.screen is not None:
            self.screen.__exit__(None, None, None)
        if self.sink is not None:
            self.sink.close()


def replay_via_server(paths: list[str], server: str, token: str | None, monitor, console, dashboard: bool) -> int:
    """`emomon replay --server`: each file is one stream (one session), paced at [monitor] speed."""
    from ..audio.sources import audio_files, file_blocks

    if monitor.save_audio:
        raise ServerError("--save-audio needs the segments' audio, which stays on the server with --server.")
    files, problems = audio_files(paths)
    for f, why in problems:
        console.print(f"emomon: {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    failed, counts = len(problems), [0, 0, 0, 0]
    name = files[0].name + (f" (+{len(files) - 1} more)" if len(files) > 1 else "") if files else "no file"
    out = _Outputs(monitor, console, dashboard, name, server)
    try:
        for f in files:
            remote = RemoteStream(server, token, str(f), out)
            out.open(remote)
            try:
                send_blocks(remote, file_blocks(f), monitor.speed, out.state)
            except EmomonError as e:
                console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                failed += 1
            remote.finish()
            for i, n in enumerate((remote.processed, remote.dropped, remote.failed, remote.interim)):
                counts[i] += n
    finally:
        out.close()
    line = f"{counts[0]} segment(s) from {len(files)} file(s) via {server}"
    line += f", {counts[1]} dropped" if counts[1] else ""
    line += f", {failed} failed" if failed else ""
    console.print(line + (f", {counts[3]} interim" if counts[3] else ""))
    return 1 if failed else 0


def live_via_server(device, server: str, token: str | None, monitor, duration, console, dashboard: bool) -> int:
    """`emomon live --server`: the microphone as one stream until Ctrl-C, SIGTERM or --duration."""
    import sys

    from ..audio.capture import DeviceError, Microphone, stop_signal

    if monitor.save_audio:
        raise ServerError("--save-audio needs the segments' audio, which stays on the server with --server.")
    mic = Microphone(device, timeout_s=monitor.input_timeout_s)
    out = _Outputs(monitor, console, dashboard, f"{mic.name} ({mic.rate} Hz)", server, stream_start=lambda: mic.started)
    remote = RemoteStream(server, token, mic.name, out)
    out.open(remote)
    fault: EmomonError | None = None
    console.print(f"listening on {mic.name} ({mic.rate} Hz), scored by {server}; Ctrl-C stops", soft_wrap=True)
    with stop_signal(duration) as stop:
        try:
            with mic:
                send_blocks(remote, mic.blocks(stop), 0.0, out.state)
        except KeyboardInterrupt:
            pass
        except (DeviceError, ServerError) as e:
            fault = e
        finally:
            try:
                remote.finish()
            except ServerError as e:
                fault = fault or e
            out.close()
    console.print(f"{remote.processed} segment(s), {remote.dropped} dropped, {remote.failed} failed via {server}")
    if fault is not None:
        print(f"emomon: {fault}", file=sys.stderr)
        return 1
    return 0
