"""A WebSocket stream of compressed audio: WebM/Opus or Ogg/Opus in chunks, as a browser's
MediaRecorder gives them (a tenth of 16-bit PCM's bytes), decoded by FFmpeg (model/media.py,
emomon[media]) on a thread of the stream's own.

The event loop puts each message's bytes into a bounded pipe (`put` waits while it is full,
so TCP pushes back on the client as for PCM); the thread reads the container from it and
hands each decoded block back to the loop (`on_audio`), where the stream is cut as PCM is.
A chunk that does not decode ends this stream alone (`failed`); the others go on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ...model.errors import AudioError

FORMATS = {"webm": "WebM", "ogg": "Ogg"}  # ?format=...: the containers MediaRecorder writes (Chromium, Firefox)
OPUS_RATE = 48000  # what FFmpeg's Opus decoder gives, whatever the encoder's input was
PIPE_BYTES = 1 << 22  # compressed bytes a stream may hold undecoded: 4 MiB, minutes of Opus


class Pipe:
    """Bytes from the loop to the decoding thread: a bounded buffer with a blocking read."""

    def __init__(self, limit: int = PIPE_BYTES) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.held = 0
        self.ended = False
        self.cond = threading.Condition()

    def room(self, n: int) -> bool:
        with self.cond:
            return self.held + n <= self.limit or not self.held

    def write(self, data: bytes) -> None:
        with self.cond:
            self.chunks.append(data)
            self.held += len(data)
            self.cond.notify_all()

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes, waiting for some; b"" once the stream has ended and all is read."""
        with self.cond:
            while not self.chunks and not self.ended:
                self.cond.wait()
            if not self.chunks:
                return b""
            data = b"".join(self.chunks)
            out, rest = (data, b"") if n < 0 else (data[:n], data[n:])
            self.chunks = [rest] if rest else []
            self.held = len(rest)
            self.cond.notify_all()
            return out


class ChunkDecoder:
    """One stream's compressed audio (see the module): `put` chunks, `end`, then await
    `done`; `failed` is set with a sentence when the stream cannot be decoded."""

    def __init__(
        self,
        fmt: str,
        loop: asyncio.AbstractEventLoop,
        on_audio: Callable[[np.ndarray], Any],
        name: str,
        block_s: float = 0.25,
    ) -> None:
        self.fmt, self.loop, self.on_audio, self.name, self.block_s = fmt, loop, on_audio, name, block_s
        self.pipe = Pipe()
        self.done = asyncio.Event()  # every decoded block has reached on_audio
        self.failed: asyncio.Future[str] = loop.create_future()
        self.thread = threading.Thread(target=self._run, name="emomon-decode", daemon=True)
        self.thread.start()

    async def put(self, data: bytes) -> None:
        while not self.pipe.room(len(data)) and not self.failed.done():
            await asyncio.sleep(0.05)  # the decoder is behind: read no more (TCP pushes back)
        self.pipe.write(data)

    def end(self) -> None:
        """No more chunks (the client's end, or the stream closed however it did): the
        thread decodes what it holds and stops."""
        self.pipe.end()

    def _run(self) -> None:
        from ...model.media import MediaReader, rechunk

        try:
            with MediaReader(self.pipe, timeout_s=None, name=self.name) as reader:
                codec = reader.stream.codec_context.name
                if reader.rate != OPUS_RATE or codec != "opus":
                    raise AudioError(
                        f"The {FORMATS[self.fmt]} stream holds {codec} at {reader.rate} Hz; a compressed stream is "
                        "Opus (what MediaRecorder writes)."
                    )
                for block in rechunk(reader.frames(), int(self.block_s * reader.rate)):
                    self._post(self.on_audio, block.mean(axis=0))
        except AudioError as e:
            self._post(self.fail, str(e))
        finally:
            self._post(self.done.set)

    def _post(self, fn: Callable, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (the server stopped): nobody is waiting
            pass

    def fail(self, sentence: str) -> None:
        if not self.failed.done():
            self.failed.set_result(sentence)
