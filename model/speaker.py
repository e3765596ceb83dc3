"""Speaker embeddings: Resemblyzer's pretrained GE2E encoder, in emomon's own torch code.

Resemblyzer (Apache-2.0, on the package index) ships a speaker encoder trained with the
generalised end-to-end loss (Wan et al., ICASSP 2018) in its wheel: a 3-layer LSTM of 256
units over 40 mel bands (linear power, not log; 25 ms windows every 10 ms), whose last
hidden state goes through a linear layer, a ReLU and an L2 norm into a 256-d embedding. An
utterance is cut into 1.6 s partials (160 frames) at 1.3 per second; its embedding is the
L2-normed mean of theirs. Before that, quiet speech is raised to -30 dBFS (never lowered).

Only the weights file comes from the wheel (`SPEAKER_WEIGHTS`, installed with --no-deps:
its librosa and the `webrtcvad` source package are not needed). It is found without
importing the package, checked by size and SHA-256, then read with
`torch.load(weights_only=True)` (tensors and plain containers only, no code). The mel
filter bank is librosa's (Slaney), from transformers' audio utilities; the STFT is torch's.

Everything here batches: all partials of all segments of a call go through one LSTM pass.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .errors import EncoderLoadError
from .pinned import PinnedWeights, pinned_files, read_pinned

SPEAKER_WEIGHTS = PinnedWeights(
    what="Speaker encoder weights",
    parts=(("resemblyzer", "pretrained.pt"),),
    size=17_090_379,
    sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    requirement="--no-deps resemblyzer==0.1.4",
)
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_S = PARTIAL_FRAMES * HOP / SAMPLE_RATE
RATE = 1.3  # partials per second of an utterance
MIN_COVERAGE = 0.75  # a last partial is kept when the audio fills this much of it
TARGET_DBFS = -30.0
HIDDEN = 256
LAYERS = 3
DIM = 256


@dataclass(frozen=True)
class Partials:
    """Where the partials of a batch of segments lie: `windows[i]` are the frame offsets of
    segment i's partials; `owner` maps each row of the stacked batch back to its segment."""

    windows: list[list[int]]
    owner: np.ndarray  # (P,) int


def raise_quiet(wav: np.ndarray) -> np.ndarray:
    """Quiet speech raised to TARGET_DBFS; louder speech left as it is (Resemblyzer's rule)."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if rms <= 0.0:
        return wav
    gain_db = TARGET_DBFS - 20.0 * np.log10(rms)
    return wav * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else wav


def partial_starts(n_samples: int, step_frames: int | None = None, min_coverage: float = MIN_COVERAGE) -> list[int]:
    """Frame offsets of the 160-frame partials covering `n_samples` (Resemblyzer's
    compute_partial_slices); `step_frames` defaults from RATE."""
    step = step_frames or int(np.round(SAMPLE_RATE / RATE / HOP))
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def read_weights() -> tuple[list[Path], bytes]:
    """The weights file's path and bytes, checked by size and SHA-256; one sentence when it is
    missing or not the pinned file."""
    paths = pinned_files(SPEAKER_WEIGHTS)
    if paths is None:
        raise EncoderLoadError(
            f"The speaker encoder's weights are not installed: pip install {SPEAKER_WEIGHTS.requirement} "
            "(make install does)."
        )
    return paths, read_pinned(paths, SPEAKER_WEIGHTS)


class SpeakerEncoder:
    """GE2E speaker embeddings of speech segments (16 kHz float32), batched."""

    def __init__(self, device: str = "cpu", backend=None) -> None:
        """`backend`: a SpeakerBackend (model/speaker_backend.py) every embedding goes through,
        or None for GE2E's own."""
        import torch

        self.backend = backend

        paths, data = read_weights()
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["model_state"]
        except Exception as e:  # noqa: BLE001 - the digest matched, so this is a torch that cannot read it
            raise EncoderLoadError(f"{SPEAKER_WEIGHTS.what} {paths[0]} cannot be read by this torch: {e}") from e
        self.device = torch.device(device)
        self.lstm = torch.nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN, DIM)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        for m in (self.lstm, self.linear):
            m.to(self.device).eval().requires_grad_(False)
        self.window = torch.hann_window(N_FFT, periodic=True, device=self.device)
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(N_FFT // 2 + 1, N_MELS, 0.0, SAMPLE_RATE / 2, SAMPLE_RATE, "slaney", "slaney")
        self.bank = torch.from_numpy(bank.astype(np.float32)).to(self.device)  # (201, 40)

    def mels(self, wav: np.ndarray):
        """(frames, 40) mel power spectrogram of one waveform (librosa's melspectrogram)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(self.device)
        spec = torch.stft(x, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
        return (spec.abs().square().T @ self.bank).contiguous()

    def partial_embeddings(self, segments: Sequence[np.ndarray], steps: Sequence[int | None] | None = None):
        """Every partial of every segment in one LSTM pass, through the back-end if there is
        one: ((P, 256) float32 array, Partials).
        `steps[i]`: frames between segment i's partials (None: Resemblyzer's 1.3 per second)."""
        import torch

        rows, windows, owner = [], [], []
        for i, seg in enumerate(segments):
            starts = partial_starts(len(seg), steps[i] if steps else None)
            need = (starts[-1] + PARTIAL_FRAMES) * HOP
            wav = raise_quiet(np.asarray(seg, np.float32))
            wav = np.pad(wav, (0, max(0, need - len(wav))))
            mel = self.mels(wav)
            rows += [mel[s : s + PARTIAL_FRAMES] for s in starts]
            windows.append(starts)
            owner += [i] * len(starts)
        with torch.inference_mode():
            _, (hidden, _) = self.lstm(torch.stack(rows))
            raw = torch.relu(self.linear(hidden[-1]))
            embeds = (raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu().numpy()
        if self.backend is not None:
            embeds = self.backend.apply(embeds)
        return embeds, Partials(windows, np.asarray(owner))

    def embed(self, segments: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 256) float32: each segment's utterance embedding, L2-normed."""
        if not segments:
            return np.zeros((0, DIM), np.float32)
        partials, where = self.partial_embeddings(segments)
        return np.stack([unit(partials[where.owner == i].sum(axis=0)) for i in range(len(segments))])


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
