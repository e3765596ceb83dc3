"""Audio through FFmpeg (PyAV, emomon[media]): any container and codec FFmpeg reads, from a
file, standard input or a network URL.

`MediaReader` opens one input, picks its first audio stream (or the one asked for) and
gives its audio as float32 arrays (channels, samples) at the stream's own rate, frame by
frame: memory stays flat for an hour-long file. Sample formats are converted by FFmpeg's
resampler, which never changes the rate here (the first frame's rate and layout are kept;
a stream that changes them mid-way is converted to them). Resampling to 16 kHz happens
where every source's does (streamer/audio/stream.py: Resampler, soxr).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .errors import AudioError, require

URL_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp")
STDIN = "-"


def available() -> bool:
    """PyAV is installed (emomon[media]); nothing is imported to find out."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def is_url(target: str | os.PathLike) -> bool:
    """A network address FFmpeg opens itself (http(s), rtsp, rtmp, srt, ...)."""
    return isinstance(target, str) and "://" in target and urlsplit(target).scheme.lower() in URL_SCHEMES


def shown(target: str | os.PathLike) -> str:
    """What a row and a message call the input: 'stdin' for '-', a URL without its password
    and query (a token in either stays out of logs), a path as it is."""
    if target == STDIN:
        return "stdin"
    if is_url(target):
        parts = urlsplit(str(target))
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        try:
            port = parts.port
        except ValueError:  # not a number: FFmpeg will say so when it opens the URL
            port = None
        return urlunsplit((parts.scheme, f"{host}:{port}" if port else host, parts.path, "", ""))
    return str(target)


class MediaReader:
    """One input through FFmpeg: `rate`, `channels`, `duration_s` (None for a live stream),
    `frames()`; a context manager. Opening says in one sentence what failed: a file that
    does not exist, data FFmpeg cannot read, no audio stream, a host that does not answer."""

    def __init__(
        self,
        target: str | os.PathLike | BinaryIO,
        stream: int | None = None,
        timeout_s: float | None = 10.0,
        name: str | None = None,
    ) -> None:
        require("media", "Reading this input", "av")
        import av

        self.name = name or shown(target if isinstance(target, str | os.PathLike) else STDIN)
        self.timeout_s = timeout_s
        what = f"'{self.name}'"
        options = {}
        if is_url(target) and timeout_s:
            options = {"rw_timeout": str(int(timeout_s * 1e6))}
            if str(target).lower().startswith(("http://", "https://")):
                # a file over HTTP that drops is asked for again from where it was (a range
                # request); a live stream (no length, not seekable) is not: its source
                # opens it again and counts the gap (streamer/audio/sources.py)
                options.update(reconnect="1", reconnect_on_network_error="1", reconnect_delay_max="4")
        self._file: BinaryIO | None = None
        try:
            self.container = av.open(self._openable(target), "r", options=options, timeout=timeout_s)
        except (av.FFmpegError, OSError) as e:
            if self._file is not None:
                self._file.close()
            if isinstance(e, FileNotFoundError):
                raise AudioError(f"Audio input {what} does not exist.") from e
            if isinstance(e, TimeoutError | av.error.ExitError):  # ExitError: PyAV's timeout interrupted FFmpeg
                raise AudioError(f"Audio input {what} did not answer within {timeout_s:g} s.") from e
            raise AudioError(f"Audio input {what} cannot be read as audio by FFmpeg ({reason(e)}).") from e
        audio = self.container.streams.audio
        if not audio:
            kinds = sorted({s.type for s in self.container.streams})
            self.close()
            has = f" (it holds {', '.join(kinds)} only)" if kinds else ""
            raise AudioError(f"Audio input {what} has no audio stream{has}.")
        if stream is not None and not 0 <= stream < len(audio):
            self.close()
            raise AudioError(f"Audio input {what} has {len(audio)} audio stream(s); --stream {stream} is not one.")
        self.stream = audio[stream or 0]
        ctx = self.stream.codec_context
        self.rate, self.channels = int(ctx.sample_rate), int(ctx.layout.nb_channels)
        if not self.rate or not self.channels:
            self.close()
            raise AudioError(f"Audio input {what} does not say its sample rate or channels.")
        self.layout = ctx.layout.name
        duration = self.container.duration  # microseconds, None for a live stream
        self.duration_s = duration / 1e6 if duration and duration > 0 else None
        self.done_s = 0.0  # audio given so far, at the stream's own rate
        self._decoded = self._decode()
        try:  # the first audio now: a file whose audio cannot be reached fails here, as opening
            self._first = next(self._decoded, None)
        except AudioError:
            self.close()
            raise
        if self._first is None:
            self.close()
            raise AudioError(f"Audio input {what} holds no audio samples.")

    def _openable(self, target: str | os.PathLike | BinaryIO) -> str | BinaryIO:
        """What av.open takes: a URL or a UTF-8 path as it is; a path that is not UTF-8 (a
        name of bytes from another system) as a file opened here."""
        if not isinstance(target, str | os.PathLike) or is_url(target):
            return target  # type: ignore[return-value]
        raw = os.fsencode(target)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self._file = open(raw, "rb")  # noqa: SIM115 - closed with the reader
            return self._file

    def frames(self) -> Iterator[np.ndarray]:
        """(channels, n) float32 arrays in order. A read that breaks off raises AudioError
        naming the time reached."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._decoded

    def _decode(self) -> Iterator[np.ndarray]:
        import av

        convert = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    for out in convert.resample(frame):
                        yield from self._take(out)
            for out in convert.resample(None):
                yield from self._take(out)
        except (av.FFmpegError, OSError) as e:
            if isinstance(e, av.error.EOFError):
                return
            why = f"nothing came for {self.timeout_s:g} s" if isinstance(e, av.error.ExitError) else reason(e)
            raise AudioError(f"Audio input '{self.name}' broke off after {self.done_s:.1f} s ({why}).") from e

    def _take(self, frame) -> Iterator[np.ndarray]:
        data = frame.to_ndarray()
        if data.shape[1]:
            self.done_s += data.shape[1] / self.rate
            yield np.ascontiguousarray(data, dtype=np.float32)

    def close(self) -> None:
        self.container.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rechunk(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Decoded frames (channels, n) of any lengths as blocks of exactly `size` samples (the
    last one shorter), as a sound card gives them."""
    parts: list[np.ndarray] = []
    held = 0
    for frame in frames:
        parts.append(frame)
        held += frame.shape[1]
        if held >= size:
            audio = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
            whole = held - held % size
            for at in range(0, whole, size):
                yield audio[:, at : at + size]
            parts, held = ([audio[:, whole:]], held - whole) if held > whole else ([], 0)
    if held:
        yield np.concatenate(parts, axis=1)


def reason(e: Exception) -> str:
    """FFmpeg's own words for a failure, without the file name it repeats."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0]


class Spool:
    """Standard input, kept as it is read until FFmpeg has opened it: a container whose index
    sits at its end (an MP4 or M4A written without "faststart") cannot be probed from a pipe,
    so the bytes read so far and the rest of the pipe go to a temporary file, which FFmpeg
    then seeks in. Once an input opened from the pipe itself, `release` stops keeping a copy
    (an hour-long pipe would otherwise fill the disk)."""

    def __init__(self, pipe: BinaryIO) -> None:
        self.pipe = pipe
        self.file: BinaryIO | None = tempfile.TemporaryFile(prefix="emomon-stdin-")

    def read(self, n: int = -1) -> bytes:
        data = self.pipe.read(n)
        if self.file is not None:
            self.file.write(data)
        return data

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def rest(self) -> BinaryIO:
        """The whole input as a seekable file: what was read, then the rest of the pipe."""
        assert self.file is not None, "released: the input opened from the pipe"
        shutil.copyfileobj(self.pipe, self.file, 1 << 20)
        self.file.seek(0)
        return self.file
