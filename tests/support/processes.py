"""emomon run as a user runs it: the command in this process, `emomon serve` in its own,
and a WebSocket client."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from emomon.model.audio import to_pcm16

from .data import REPO, SAMPLE


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`emomon ARGS` in `cwd` through main() in this process: its exit code and what it
    printed, for tests where a process of its own proves nothing more (the real weights then
    load in about 0.5 s instead of 6)."""
    import contextlib
    import io

    from emomon.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["emomon", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one process of the machine at a time (flock on a file in the temp folder):
    for what tests running side by side (make test's two workers) cannot share."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / f"emomon-tests-{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`emomon serve` in its own process on a free loopback port, ready once /healthz answers."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        import sys
        import time

        self.port = free_port()
        cmd = [sys.executable, "-m", "emomon.cli", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/healthz")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read()) from None
                time.sleep(0.1)
        raise RuntimeError("emomon serve did not answer /healthz within 60 s")

    def get(self, path: str) -> tuple[int, str]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()

    def stop(self) -> tuple[str, str]:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.communicate(timeout=60)


def pcm(rate: int = 16000, path: Path = SAMPLE) -> bytes:
    """A file as 16-bit PCM at `rate`, as a client sends it."""
    import soundfile as sf
    import soxr

    audio, sr = sf.read(path, dtype="float32")
    if sr != rate:
        audio = soxr.resample(audio, sr, rate)
    return to_pcm16(audio).tobytes()


def stream(url: str, data: bytes, chunk_s: float = 0.25, rate: int = 16000, end: bool = True, step: int = 0, **kw):
    """Send `data` in chunks (of chunk_s of 16-bit PCM at `rate`, or of `step` bytes), then
    {"type": "end"}; return every message and the close code."""
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    messages = []
    with connect(url, max_size=None, open_timeout=20, **kw) as ws:
        messages.append(json.loads(ws.recv(timeout=20)))
        step = step or int(chunk_s * rate) * 2
        for i in range(0, len(data), step):
            ws.send(data[i : i + step])
        if end:
            ws.send(json.dumps({"type": "end"}))
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


def segments(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "segment"]
