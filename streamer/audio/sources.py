"""Audio sources: files, standard input and network streams, block by block at their own
rate, as a sound card gives blocks.

- `FileSource`: what libsndfile reads (WAV, FLAC, Ogg, MP3), read `block_s` at a time;
- `MediaSource`: anything FFmpeg reads (model/media.py, emomon[media]): M4A, WebM, MP4 and
  other containers, the audio of a video, standard input, http(s)/rtsp/rtmp/srt URLs, with
  a bounded reconnect for a live stream whose connection drops;
- `RawSource`: headerless PCM on standard input (`--format s16le|f32le`).
`open_source` picks one for a target. libsndfile reads what it reads faster than FFmpeg
(WAV five times; docs/benchmarks.md, "Decoding"), and needs no extra. Memory stays constant
for hour-long inputs. The stream they feed (stream.py: AudioStream) resamples, as it does a
microphone's blocks.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from ...model.audio import PCM_SCALE, open_audio
from ...model.errors import AudioError
from ...model.media import STDIN, MediaReader, Spool, available, is_url, rechunk, shown

# what a folder's file is called by when the formats libsndfile reads are not enough (the
# containers and codecs people record in; FFmpeg reads many more, named one by one)
MEDIA_SUFFIXES = {".m4a", ".mp4", ".m4v", ".mov", ".aac", ".webm", ".mkv", ".mka", ".opus", ".amr", ".3gp",
                  ".wma", ".wmv", ".asf", ".avi", ".ts", ".flv", ".ac3", ".caf", ".mpg", ".mpeg"}  # fmt: skip


@dataclass(frozen=True)
class InputSettings:
    """[input]: how network streams are opened and kept (replay, batch)."""

    reconnect_s: float = 10.0  # a live stream that drops is opened again for up to this long; 0 = never
    timeout_s: float = 10.0  # a network input that does not answer (opening, reading) for this long has failed

    def __post_init__(self) -> None:
        if self.reconnect_s < 0 or self.timeout_s <= 0:
            raise ValueError("reconnect_s must be >= 0 and timeout_s > 0")


class Source(Protocol):
    """One input as a stream of blocks."""

    name: str  # what the rows call it: the path, "stdin", a URL without its secrets
    rate: int  # Hz, the input's own
    channels: int
    live: bool  # paced by the input itself (a live network stream): never replayed faster
    duration_s: float | None  # as the input says (None: a stream, or not said)
    gaps: queue.SimpleQueue  # (start_s, end_s, why) of input lost on the way, silence in its place

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 at `rate`: mono (channels averaged), or (n, channels) with `each`."""

    def close(self) -> None: ...


def audio_suffixes() -> set[str]:
    """File name endings a folder's audio files have: libsndfile's formats, and with
    emomon[media] the common containers FFmpeg reads."""
    import soundfile as sf

    own = {"." + k.lower() for k in sf.available_formats()} | {".aif", ".oga", ".opus"}
    return own | MEDIA_SUFFIXES if available() else own


def audio_files(paths: list[str | Path]) -> tuple[list[str | Path], list[tuple[str, str]]]:
    """Expand folders (their audio files by name ending, sorted) into inputs to replay;
    files, `-` and URLs stay as they are.

    Returns (inputs, problems): a path that does not exist is a problem (path, reason); the
    rest goes on. A file that turns out not to be audio is said when it is opened.
    """
    inputs: list[str | Path] = []
    problems = []
    suffixes = None
    for p in paths:
        if p == STDIN or is_url(p):
            inputs.append(str(p))
            continue
        p = Path(p)
        if p.is_dir():
            suffixes = suffixes or audio_suffixes()
            found = sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in suffixes)
            if not found:
                problems.append((str(p), f"holds no audio files (looked for {', '.join(sorted(suffixes)[:6])}, ...)"))
            inputs += found
        elif p.exists():
            inputs.append(p)
        else:
            problems.append((str(p), "does not exist"))
    return inputs, problems


class FileSource:
    """A file libsndfile reads (see Source). Opening it says in one sentence when the file
    cannot be read."""

    live = False

    def __init__(self, path: str | Path, block_s: float = 0.5, each: bool = False) -> None:
        self.path, self.block_s, self.each = path, block_s, each
        self.name = str(path)
        self.gaps: queue.SimpleQueue = queue.SimpleQueue()
        self.file = open_audio(path)
        self.rate, self.channels = self.file.samplerate, self.file.channels
        self.duration_s: float | None = self.file.frames / self.file.samplerate

    def blocks(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        f = self.file
        frames = max(1, int(self.block_s * f.samplerate))
        with f:
            while True:
                try:
                    block = f.read(frames, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as e:
                    at = f.tell() / f.samplerate
                    raise AudioError(f"Audio file '{self.path}' is corrupt after {at:.1f} s ({e}).") from e
                if len(block):
                    yield np.ascontiguousarray(block if self.each else block.mean(axis=1), dtype=np.float32)
                if len(block) < frames:
                    return

    def close(self) -> None:
        self.file.close()


class MediaSource:
    """Anything FFmpeg opens (see Source): a path, standard input ("-", or a binary file
    object), a URL. A live stream (a URL without a duration) that drops is opened again for
    up to `reconnect_s`; the time it was away becomes silence and a gap."""

    def __init__(
        self,
        target: str | Path,
        block_s: float = 0.5,
        each: bool = False,
        stream: int | None = None,
        reconnect_s: float = 10.0,
        timeout_s: float = 10.0,
        pipe: BinaryIO | None = None,
    ) -> None:
        self.target, self.block_s, self.each, self.stream = target, block_s, each, stream
        self.reconnect_s, self.timeout_s = reconnect_s, timeout_s
        self.name = shown(target)
        self.gaps: queue.SimpleQueue = queue.SimpleQueue()
        self.reconnects = 0
        self.on_state: Callable[[str], object] = lambda state: None  # a live stream's state, as it changes
        self.reader = self._open(pipe)
        self.rate, self.channels = self.reader.rate, self.reader.channels
        self.duration_s = self.reader.duration_s
        self.live = is_url(target) and self.duration_s is None

    def _open(self, pipe: BinaryIO | None = None) -> MediaReader:
        if self.target != STDIN:
            return MediaReader(self.target, self.stream, self.timeout_s)
        spool = Spool(pipe or sys.stdin.buffer)
        try:
            reader = MediaReader(spool, self.stream, self.timeout_s, name="stdin")
            spool.release()  # it opened from the pipe: no copy of the rest is needed
            return reader
        except AudioError as e:  # an index at the end (MP4 without faststart): read it from a file
            whole = spool.rest()
            if whole.seek(0, os.SEEK_END) == 0:
                raise AudioError("Standard input is empty: pipe audio into it (... | emomon replay -).") from e
            whole.seek(0)
            return MediaReader(whole, self.stream, self.timeout_s, name="stdin")

    def blocks(self) -> Iterator[np.ndarray]:
        for audio in rechunk(self._frames(), max(1, int(self.block_s * self.rate))):
            yield self._block(audio)

    def _block(self, audio: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(audio.T if self.each else audio.mean(axis=0), dtype=np.float32)

    def _frames(self) -> Iterator[np.ndarray]:
        done = 0  # samples given, silence for lost input included: stream time
        if self.live:
            self.on_state("live")
        while True:
            try:
                for frame in self.reader.frames():
                    done += frame.shape[1]
                    yield frame
                if not self.live:
                    return
                why = "the stream ended"
            except AudioError as e:
                if not self.live or not self.reconnect_s:
                    raise
                why = str(e)
            if not self.reconnect_s:  # a live stream that ended, and no reconnecting: its end
                return
            self.reader.close()
            dropped = time.monotonic()
            self.on_state(f"reconnecting: lost at {done / self.rate:.1f} s")
            self.reader, back = self._reconnect(why, done / self.rate)
            away = int((back - dropped) * self.rate)
            self.gaps.put((done / self.rate, (done + away) / self.rate, f"the stream dropped and came back ({why})"))
            self.reconnects += 1
            self.on_state(f"live, reconnected {self.reconnects}x")
            yield np.zeros((self.channels, away), np.float32)
            done += away

    def _reconnect(self, why: str, at_s: float) -> tuple[MediaReader, float]:
        """The stream again and when the request that reached it was made (its audio starts
        about then: the time FFmpeg then takes to probe it is not a gap), or AudioError once
        reconnect_s has passed without it."""
        until = time.monotonic() + self.reconnect_s
        wait = 0.25
        while True:
            asked = time.monotonic()
            try:
                reader = MediaReader(self.target, self.stream, max(0.5, min(self.timeout_s, until - asked)))
            except AudioError as e:
                if time.monotonic() + wait >= until:
                    raise AudioError(
                        f"Stream '{self.name}' was lost after {at_s:.1f} s ({why}) and did not come back within "
                        f"{self.reconnect_s:g} s ({e})."
                    ) from e
                time.sleep(wait)
                wait = min(2 * wait, 1.0)
                continue
            if (reader.rate, reader.channels) != (self.rate, self.channels):
                reader.close()
                raise AudioError(
                    f"Stream '{self.name}' came back at {reader.rate} Hz, {reader.channels} channel(s), not "
                    f"{self.rate} Hz, {self.channels}: a new stream, not this one."
                )
            return reader, asked

    def close(self) -> None:
        self.reader.close()


@dataclass(frozen=True)
class RawFormat:
    """Headerless PCM: `--format s16le|f32le --rate R --channels C`."""

    format: str = "s16le"
    rate: int = 16000
    channels: int = 1

    def __post_init__(self) -> None:
        if self.format not in RAW_DTYPES:
            raise AudioError(f"Raw format '{self.format}' is not one of {', '.join(RAW_DTYPES)}.")
        if self.rate < 1000 or self.channels < 1:
            raise AudioError(f"Raw PCM needs a rate of at least 1000 Hz and one channel or more, not "
                             f"{self.rate} Hz and {self.channels}.")  # fmt: skip


RAW_DTYPES = {"s16le": "<i2", "f32le": "<f4"}


class RawSource:
    """Headerless PCM from a pipe (see Source): s16le scaled by 2**15 as every 16-bit input
    here (model/audio.py), or f32le as it is."""

    live = False
    name = "stdin"
    duration_s = None

    def __init__(self, raw: RawFormat, block_s: float = 0.5, each: bool = False, pipe: BinaryIO | None = None):
        self.raw, self.block_s, self.each = raw, block_s, each
        self.pipe = pipe or sys.stdin.buffer
        self.rate, self.channels = raw.rate, raw.channels
        self.gaps: queue.SimpleQueue = queue.SimpleQueue()

    def blocks(self) -> Iterator[np.ndarray]:
        dtype = np.dtype(RAW_DTYPES[self.raw.format])
        frame = dtype.itemsize * self.channels
        want = max(1, int(self.block_s * self.rate)) * frame
        rest = b""
        while True:
            data = rest + self.pipe.read(want - len(rest))
            usable = len(data) - len(data) % frame
            if usable:
                pcm = np.frombuffer(data[:usable], dtype).reshape(-1, self.channels)
                block = pcm.astype(np.float32) / (PCM_SCALE if dtype.kind == "i" else 1.0)
                yield np.ascontiguousarray(block if self.each else block.mean(axis=1))
            rest = data[usable:]
            if len(data) < want:  # the pipe closed
                return

    def close(self) -> None:
        pass


def media_missing(target: str | Path) -> str:
    """The sentence for standard input or a stream when FFmpeg (emomon[media]) is not
    installed, else "": what replay says before any model loads, and open_source."""
    if (target != STDIN and not is_url(target)) or available():
        return ""
    what = "Standard input" if target == STDIN else f"The stream '{shown(target)}'"
    return f"{what} is read through FFmpeg: pip install 'emomon[media]'."


def open_source(
    target: str | Path,
    each: bool = False,
    stream: int | None = None,
    raw: RawFormat | None = None,
    settings: InputSettings = InputSettings(),
    block_s: float = 0.5,
) -> Source:
    """The source for `target`: `-` (standard input: a container, or `raw` PCM), a URL, or
    a file (libsndfile's formats through libsndfile, the rest through FFmpeg). Raises
    AudioError in one sentence: a file that does not exist or is not audio, a URL that does
    not answer, an input that needs emomon[media] without it."""
    if raw is not None:
        if target != STDIN:
            raise AudioError("--format, --rate and --pcm-channels describe raw PCM on standard input ('-').")
        return RawSource(raw, block_s, each)
    network = target == STDIN or is_url(target)
    if not network:
        path = Path(target)
        if not path.is_file():
            raise AudioError(f"Audio file '{path}' does not exist.")
        try:
            return FileSource(path, block_s, each)
        except AudioError:
            if not available():
                raise AudioError(
                    f"Audio file '{path}' is not a format libsndfile reads (WAV, FLAC, Ogg, MP3); "
                    "other formats need FFmpeg: pip install 'emomon[media]'."
                ) from None
    elif missing := media_missing(target):
        raise AudioError(missing)
    return MediaSource(target, block_s, each, stream, settings.reconnect_s, settings.timeout_s)
