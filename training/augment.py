"""Microphone-like changes to speech: gain, noise, a telephone band, a little reverberation,
a speech codec, a shorter excerpt.

Used two ways: to augment training audio (`augment`, a random chain drawn from
`AugmentSettings` with a seeded generator), and to test robustness (`perturb`, one named
change such as "white:20" applied the same way to every file). Everything works on
float32 mono 16 kHz arrays and is deterministic for a given generator state.

Levels are not clipped: a +12 dB gain on a loud clip goes past full scale, as the float
pipeline carries it; a real converter would clip there instead.
"""

from __future__ import annotations

import numpy as np

from ..model.audio import SAMPLE_RATE
from .settings import AugmentSettings

TELEPHONE_RATE = 8_000  # Hz: narrow-band telephony
TELEPHONE_LOW_HZ = 300.0  # its lower band edge
REVERB_RT60_S = (0.2, 0.6)  # small rooms
REVERB_WET = (0.1, 0.4)  # reverberant energy relative to the direct sound


def gain(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** (db / 20)).astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-12


def noise(x: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f power) noise at `snr_db` below the clip's mean power."""
    n = rng.standard_normal(len(x))
    if color == "pink":
        spec = np.fft.rfft(n)
        f = np.fft.rfftfreq(len(n), 1 / SAMPLE_RATE)
        spec[1:] /= np.sqrt(f[1:] / f[1])  # power falls as 1/f
        spec[0] = 0.0
        n = np.fft.irfft(spec, len(n))
    n *= np.sqrt(_power(x) / _power(n) / 10 ** (snr_db / 10))
    return (x + n).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """Through 8 kHz sampling and back (nothing above 4 kHz), without its lowest 300 Hz."""
    import soxr
    from scipy.signal import butter, sosfilt

    narrow = soxr.resample(x, SAMPLE_RATE, TELEPHONE_RATE)
    narrow = sosfilt(butter(4, TELEPHONE_LOW_HZ, "highpass", fs=TELEPHONE_RATE, output="sos"), narrow)
    back = soxr.resample(narrow.astype(np.float32), TELEPHONE_RATE, SAMPLE_RATE)
    return np.ascontiguousarray(back[: len(x)], dtype=np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A synthetic small-room response: the direct sound plus exponentially decaying noise."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(*REVERB_RT60_S)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail *= np.sqrt(rng.uniform(*REVERB_WET) / np.sum(tail**2))
    tail[0] = 1.0  # the direct path
    y = fftconvolve(x, tail)[: len(x)]
    return (y * np.sqrt(_power(x) / _power(y))).astype(np.float32)


def opus(x: np.ndarray) -> np.ndarray:
    """Through the Opus speech codec and back (Ogg Opus in memory, libsndfile's default
    bitrate, about 30 kbit/s at 16 kHz), as VoIP and phone apps pass speech."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), SAMPLE_RATE, format="OGG", subtype="OPUS")
    buf.seek(0)
    y = sf.read(buf, dtype="float32")[0]
    return np.ascontiguousarray(np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)], dtype=np.float32)


def crop(x: np.ndarray, seconds: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A random excerpt of `seconds` (low to high) length; the whole clip when it is shorter."""
    n = int(rng.uniform(*seconds) * SAMPLE_RATE)
    if n >= len(x):
        return x
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start : start + n]


def augment(x: np.ndarray, s: AugmentSettings, rng: np.random.Generator) -> np.ndarray:
    """One random microphone-like version of `x` (with codec = crop = 0, the same draws as
    before those two existed, so older recipes' copies do not change)."""
    if rng.random() < s.reverb:
        x = reverb(x, rng)
    if rng.random() < s.telephone:
        x = telephone(x)
    if rng.random() < s.noise:
        x = noise(x, rng.uniform(*s.snr_db), "pink" if rng.random() < 0.5 else "white", rng)
    x = gain(x, rng.uniform(-s.gain_db, s.gain_db))
    if s.crop and rng.random() < s.crop:
        x = crop(x, s.crop_s, rng)
    if s.codec and rng.random() < s.codec:
        x = opus(x)
    return x


def perturb(x: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """One named change for robustness tests: "white:20", "pink:20", "gain:-12", "telephone"."""
    kind, _, value = name.partition(":")
    if kind == "telephone":
        return telephone(x)
    if kind == "gain":
        return gain(x, float(value))
    if kind in ("white", "pink"):
        return noise(x, float(value), kind, np.random.default_rng(seed))
    raise ValueError(f"unknown perturbation '{name}'")
