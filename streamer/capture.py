"""Microphone capture with sounddevice (PortAudio).

The stream runs at the device's native rate (many devices have no 16 kHz mode). The
PortAudio callback only copies the block into a bounded queue and returns, as in
python-sounddevice's rec_unlimited example; downmixing and resampling happen in the
consuming thread. Input overflows reported by PortAudio and blocks the queue had no room
for are both counted, never silent.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from ..model.audio import SAMPLE_RATE
from ..model.errors import EmomonError

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
    """A running input stream: iterate `blocks()` for float32 mono 16 kHz audio."""

    def __init__(self, device: str | int | None = None, block_s: float = 0.05, max_blocks: int = 400) -> None:
        self.info = resolve_device(device)
        self.name = self.info["name"]
        self.rate = self.info["rate"]
        self.block = max(1, int(block_s * self.rate))
        self.q: queue.Queue[np.ndarray] = queue.Queue(maxsize=max_blocks)  # ~20 s of audio
        self.overflows = 0  # PortAudio said input was lost
        self.lost_blocks = 0  # our queue was full
        self._stream = None

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        if status.input_overflow:
            self.overflows += 1
        try:
            self.q.put_nowait(indata.copy())
        except queue.Full:
            self.lost_blocks += 1

    def __enter__(self) -> Microphone:
        sd = _sounddevice()
        try:
            self._stream = sd.InputStream(
                device=self.info["index"], samplerate=self.rate, channels=1, dtype="float32",
                blocksize=self.block, callback=self._callback,
            )  # fmt: skip
            self._stream.start()
        except sd.PortAudioError as e:
            raise DeviceError(f"Input device '{self.name}' cannot be opened: {e}.") from e
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """Resampled blocks until `stop` is set (checked at least every 0.1 s)."""
        import soxr

        resampler = (
            soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32") if self.rate != SAMPLE_RATE else None
        )
        while not stop.is_set():
            try:
                block = self.q.get(timeout=0.1)[:, 0]
            except queue.Empty:
                continue
            out = resampler.resample_chunk(block) if resampler is not None else block
            if len(out):
                yield out
