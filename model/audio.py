"""Audio constants shared by every stage, and whole-file reading.

Each constant is derived from the others where it can be.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import AudioError

SAMPLE_RATE = 16_000  # Hz: the rate every encoder here takes; sources resample to it
MIN_SEGMENT_S = 0.3  # s: shortest segment the model accepts (shorter speech carries little emotion)
MIN_SEGMENT_SAMPLES = int(MIN_SEGMENT_S * SAMPLE_RATE)  # 4800 samples
# 16-bit PCM (the WebSocket protocol both ways, the page, openSMILE's input): one scale, 2**15,
# as libsndfile uses: x = n / 32768, n = round(x * 32768) clipped to the int16 range (so +1.0
# gives 32767). The VAD quantises its frames its own way (streamer/audio/segmenter.py).
PCM_SCALE = 32768.0


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> little-endian int16 (to_pcm16(x).tobytes() is the wire format)."""
    return np.clip(np.round(np.asarray(audio, np.float32) * PCM_SCALE), -32768, 32767).astype("<i2")


def from_pcm16(data: bytes | np.ndarray) -> np.ndarray:
    """little-endian int16 (bytes or an array) -> float32 samples in [-1, 1)."""
    pcm = np.frombuffer(data, dtype="<i2") if isinstance(data, bytes | bytearray | memoryview) else data
    return pcm.astype(np.float32) / PCM_SCALE


def open_audio(path: str | Path):
    """`path` opened with libsndfile (a `soundfile.SoundFile`, to close or use as a context).

    Any format libsndfile reads. Raises AudioError with one sentence naming the file when it
    is missing, unreadable or empty.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"Audio file '{path}' does not exist.")
    try:
        f = sf.SoundFile(os.fsencode(path))  # bytes: a name that is not UTF-8 opens too
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"Audio file '{path}' cannot be read as audio ({_first_line(e)}).") from e
    if f.frames == 0:
        f.close()
        raise AudioError(f"Audio file '{path}' holds no samples.")
    return f


def read_audio(path: str | Path) -> np.ndarray:
    """A whole audio file as float32 mono at SAMPLE_RATE (channels averaged, soxr resampling):
    libsndfile's formats through libsndfile, any other (M4A, WebM, the audio of a video)
    through FFmpeg with emomon[media] (model/media.py).

    Raises AudioError with one sentence naming the file when it is missing, unreadable,
    corrupt or empty.
    """
    import soundfile as sf
    import soxr

    from . import media

    try:
        f = open_audio(path)
    except AudioError as e:
        if not Path(path).is_file() or not media.available():
            raise
        try:
            with media.MediaReader(path) as reader:
                mono, rate = np.concatenate([frame.mean(axis=0) for frame in reader.frames()]), reader.rate
        except AudioError as ffmpeg:
            if "broke off" in str(ffmpeg):  # FFmpeg read some of it: its sentence says how far
                raise
            raise AudioError(f"{str(e).rstrip('.')}; FFmpeg cannot read it either.") from ffmpeg
    else:
        with f:
            try:
                audio = f.read(dtype="float32", always_2d=True)  # (N, channels)
            except (sf.LibsndfileError, RuntimeError, ValueError) as e:
                raise AudioError(f"Audio file '{path}' cannot be read as audio ({_first_line(e)}).") from e
            rate = f.samplerate
        if audio.shape[0] == 0:
            raise AudioError(f"Audio file '{path}' holds no samples.")
        mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
