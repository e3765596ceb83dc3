"""Microphone capture with sounddevice (PortAudio).

The stream runs at the device's native rate (many devices have no 16 kHz mode). The
PortAudio callback only copies the block into a bounded queue and returns, as in
python-sounddevice's rec_unlimited example; the blocks keep the device's rate and the
stream they feed resamples them (stream.py). Input overflows reported by PortAudio and
blocks the queue had no room for are both counted, never silent, and the audio lost keeps
its place in time: `blocks()` yields silence as long as what was lost (the blocks dropped, or for an overflow the gap in
PortAudio's ADC clock where the host gives one), so stream time stays the device's time
and wall times stay true, and each gap is recorded in `gaps` (stream seconds, and why) for
the outputs to log as a row with status `lost`.

A device can go away while it records (unplugged, the sound server killed). PortAudio
does not always say so: the stream may stay "active" while no callback comes. `blocks()`
therefore raises DeviceError, naming the device, when the stream ends or errors, or when no
block has arrived for `timeout_s` seconds; the caller flushes and closes what it has.
PortAudio and ALSA print their own diagnostics straight to file descriptor 2;
`quiet_native_stderr()` keeps them off the user's terminal (emomon -v shows them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from ...model.errors import EmomonError

NO_DEVICE = "No audio input device found (is a microphone connected, or PulseAudio running?)."


class DeviceError(EmomonError):
    """No usable input device, or PortAudio itself is missing."""


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as e:  # the Python package is there, the PortAudio library is not
        raise DeviceError(
            "PortAudio is not installed: install it (Debian/Ubuntu: apt install libportaudio2; "
            "macOS: brew install portaudio) and try again."
        ) from e
    return sd


def input_devices() -> list[dict]:
    """Input-capable devices: index, name, channels, default rate, and which is the default."""
    sd = _sounddevice()
    try:
        default = sd.default.device[0]
        return [
            {"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "rate": int(d["default_samplerate"]), "default": i == default}
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0
        ]  # fmt: skip
    except sd.PortAudioError as e:
        raise DeviceError(f"PortAudio cannot list the audio devices: {e}.") from e


def device_list_text() -> str:
    devices = input_devices()
    if not devices:
        return "no input devices"
    return "; ".join(f"{d['index']}: {d['name']}" + (" (default)" if d["default"] else "") for d in devices)


def resolve_device(device: str | int | None) -> dict:
    """The input device by index, by (part of its) name, or the default; one sentence if none fits."""
    devices = input_devices()
    if not devices:
        raise DeviceError(NO_DEVICE)
    if device in (None, ""):
        return next((d for d in devices if d["default"]), devices[0])
    if isinstance(device, int) or str(device).isdigit():
        match = [d for d in devices if d["index"] == int(device)]
    else:
        match = [d for d in devices if str(device).lower() in d["name"].lower()]
    if len(match) != 1:
        what = "matches no input device" if not match else "matches several input devices"
        raise DeviceError(f"Device '{device}' {what}; input devices: {device_list_text()}.")
    return match[0]


class Microphone:
    """A running input stream: iterate `blocks()` for float32 mono audio at the device's `rate`."""

    def __init__(
        self, device: str | int | None = None, block_s: float = 0.05, max_blocks: int = 400, timeout_s: float = 3.0
    ) -> None:
        self.info = resolve_device(device)
        self.name = self.info["name"]
        self.rate = self.info["rate"]
        self.block = max(1, int(block_s * self.rate))
        self.timeout_s = timeout_s  # no block for this long while running: the device is gone
        # (frames lost just before it and why, the block): ~20 s of audio
        self.q: queue.Queue[tuple[int, str, np.ndarray]] = queue.Queue(maxsize=max_blocks)
        self.overflows = 0  # PortAudio said input was lost
        self.lost_blocks = 0  # our queue was full
        self.gaps: queue.SimpleQueue[tuple[float, float, str]] = queue.SimpleQueue()  # (start_s, end_s, why)
        self.started: datetime | None = None  # wall time of stream time 0: the first block's recording
        self._stream = None
        self._ended = threading.Event()  # PortAudio finished the stream (stopped, aborted or failed)
        self._lost, self._why = 0, ""  # frames lost since the last block queued (PortAudio's thread)
        self._next_adc = 0.0  # where the next block should start on PortAudio's ADC clock (0: unknown)

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        if self.started is None:  # when the first block was recorded, not when it was read
            self.started = datetime.now(UTC) - timedelta(seconds=frames / self.rate)
        adc = getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0
        if status.input_overflow:
            self.overflows += 1
            gap = round((adc - self._next_adc) * self.rate) if adc and self._next_adc else 0
            if gap > 0:
                self._lost, self._why = self._lost + gap, self._why or "the device overflowed"
        self._next_adc = adc + frames / self.rate if adc else 0.0
        try:
            self.q.put_nowait((self._lost, self._why, indata.copy()))
            self._lost, self._why = 0, ""
        except queue.Full:
            self.lost_blocks += 1
            self._lost, self._why = self._lost + frames, self._why or "the input queue was full"

    def __enter__(self) -> Microphone:
        sd = _sounddevice()
        try:
            self._stream = sd.InputStream(
                device=self.info["index"], samplerate=self.rate, channels=1, dtype="float32",
                blocksize=self.block, callback=self._callback, finished_callback=self._ended.set,
            )  # fmt: skip
            self._stream.start()
        except sd.PortAudioError as e:
            raise DeviceError(f"Input device '{self.name}' cannot be opened: {e}.") from e
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the stream. After a device fault PortAudio may block in stop or close (the
        sound server is gone), so that runs in a daemon thread given one second."""
        stream, self._stream = self._stream, None
        if stream is None:
            return

        def close() -> None:
            with contextlib.suppress(Exception):  # the device may already be gone: nothing to save
                stream.abort() if exc[0] is not None else stream.stop()
            with contextlib.suppress(Exception):
                stream.close()

        closer = threading.Thread(target=close, name="close-input", daemon=True)
        closer.start()
        closer.join(1.0)

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """Blocks at the device's rate until `stop` is set (checked at least every 0.1 s);
        audio lost before a block comes as silence in its place (and in `gaps`)."""
        last = time.monotonic()
        frames = 0  # at the device's rate, silence for lost audio included: stream time
        while not stop.is_set():
            try:
                lost, why, data = self.q.get(timeout=0.1)
            except queue.Empty:
                if self._ended.is_set():
                    raise DeviceError(f"Input device '{self.name}' stopped: PortAudio ended its stream.") from None
                if time.monotonic() - last > self.timeout_s:
                    raise DeviceError(
                        f"Input device '{self.name}' stopped delivering audio ({self.timeout_s:g} s without any); "
                        "it was unplugged or its sound server stopped."
                    ) from None
                continue
            last = time.monotonic()
            if lost:
                self.gaps.put((frames / self.rate, (frames + lost) / self.rate, why))
                frames += lost
                yield np.zeros(lost, np.float32)
            frames += len(data)
            yield data[:, 0]


@contextlib.contextmanager
def stop_signal(duration: float | None = None) -> Iterator[threading.Event]:
    """The event that ends a live run: SIGTERM sets it, and so does the end of `duration`
    seconds when given. SIGTERM's previous handler is back on exit."""
    import signal

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    timer = threading.Timer(duration or 0, stop.set)
    timer.daemon = True
    if duration:
        timer.start()
    try:
        yield stop
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 (PortAudio's "Expression ... failed",
    ALSA's "ALSA lib ...") to /dev/null, while Python's sys.stderr and logging keep writing
    to the real stderr through a duplicate of it. A no-op when disabled (emomon -v) or when
    stderr is not a real file descriptor."""
    try:
        fd = sys.stderr.fileno() if enabled else -1
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd != 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    old = sys.stderr
    handlers = [h for h in logging.root.handlers if isinstance(h, logging.StreamHandler) and h.stream is old]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = python_stderr
    for h in handlers:
        h.setStream(python_stderr)
    try:
        yield
    finally:
        python_stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = old
        for h in handlers:
            h.setStream(old)
        python_stderr.close()
