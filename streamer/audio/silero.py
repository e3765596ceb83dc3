"""Silero VAD under ONNX Runtime: a speech probability for every 32 ms of 16 kHz audio.

`[vad] engine = "silero"` feeds these probabilities to the segmenter's state machine
(streamer/audio/segmenter.py) in place of WebRTC VAD's decisions. Silero VAD is a small
recurrent network trained on speech in many languages and noises; WebRTC VAD is a Gaussian
model of the band below 4 kHz that hears loud steady noise and babble as speech
(docs/benchmarks.md, "VAD boundaries").

The model file is the one the `silero-vad` wheel on the package index ships
(silero_vad/data/silero_vad_16k_op15.onnx, MIT licence). emomon finds it without
importing the package (whose Python code needs torch and torchaudio), checks its size and
SHA-256 before ONNX Runtime parses a byte, and runs it with its own inputs: each 512-sample
chunk preceded by the previous chunk's last 64 samples, and the network's (2, 1, 128)
state carried from chunk to chunk, as the package's own wrapper does.

One inference session serves every stream (the state is each stream's own); a session
call costs about 0.1 ms on one core, some 3 ms per second of audio.
"""

from __future__ import annotations

import functools

import numpy as np

from ...model.audio import SAMPLE_RATE
from ...model.errors import EmomonError, require
from ...model.pinned import PinnedWeights, pinned_files, read_pinned

CHUNK = 512  # samples per decision at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous chunk the network sees with each one

SILERO_VAD = PinnedWeights(
    what="Silero VAD model",
    parts=(("silero_vad", "data/silero_vad_16k_op15.onnx"),),
    size=1_289_603,
    sha256="7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
    requirement="--no-deps silero-vad==6.2.3",
)


class VadModelError(EmomonError):
    """The Silero VAD model is missing or is not the pinned file."""


@functools.lru_cache(maxsize=1)
def _session():
    """The one inference session (thread-safe: streams share it), on one thread."""
    require("onnx", "[vad] engine = 'silero'", "onnxruntime")
    import onnxruntime as ort

    paths = pinned_files(SILERO_VAD)
    if paths is None:
        raise VadModelError(
            f"Setting vad.engine = 'silero' needs Silero VAD's model file: pip install {SILERO_VAD.requirement}."
        )
    try:
        data = read_pinned(paths, SILERO_VAD)
    except EmomonError as e:
        raise VadModelError(str(e)) from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


class SileroVad:
    """One stream's Silero VAD: `prob(chunk)` for consecutive 512-sample chunks."""

    def __init__(self) -> None:
        self.session = _session()
        self.sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)

    def prob(self, chunk: np.ndarray) -> float:
        """The probability that this 32 ms chunk (512 float32 samples, after the previous
        one) is speech."""
        x = np.concatenate([self.context, np.asarray(chunk, np.float32)])[None]  # (1, 576)
        out, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.sr})
        self.context = x[0, -CONTEXT:]
        return float(out[0, 0])
