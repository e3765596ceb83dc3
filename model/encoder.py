"""Speech encoders: waveform segments in, padded frame embeddings plus true lengths out.

Three kinds behind one interface (`Encoder.encode(segments) -> Embeddings`):

- `SSLEncoder`: any HuBERT / wav2vec 2.0 / WavLM checkpoint through transformers, by hub
  id or local folder. The paper uses the last layer of HuBERT-Large.
- `WhisperSpeechEncoder` (model/whisper.py): Whisper's encoder on each segment's own
  length; the shipped default's, from pinned weights on the package index.
- `OpenSmileEncoder`: openSMILE low-level descriptors every 10 ms, cheap on a CPU and
  fully offline: eGeMAPSv02 (25 values) or ComParE_2016 (65 values and their deltas,
  130; the default before the Whisper ones used it).

Feature padding and masking, as in the paper: waveforms are never padded into one
another's results. Layer-norm encoders (HuBERT-Large, wav2vec2-large-lv60, WavLM) take an
attention mask, so segments of any lengths share one forward pass. Group-norm encoders
(HuBERT-Base, wav2vec2-base) normalise each channel over the whole input in their first
convolution, so padding would change every frame: they batch only segments of equal
length. The tests hold both rules to "alone == inside a batch".

torch and transformers are imported inside the functions that need them, so that
`emomon --help` stays fast.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .audio import SAMPLE_RATE
from .compute import (
    Embeddings,
    Encoder,
    collect,
    configure,
    from_pretrained,
    pad_sequences,
    place,
    plan_batches,
    weights_digest,
)
from .errors import BundleError, ConfigError, EncoderLoadError
from .smile import SmileLLD
from .specs import EncoderSpec
from .whisper import WhisperSpeechEncoder

if TYPE_CHECKING:
    import torch

log = logging.getLogger("emomon")

SSL_MODEL_TYPES = ("hubert", "wav2vec2", "wavlm", "data2vec-audio")
OPENSMILE_HOP_S = 0.010  # both openSMILE descriptor sets: one frame every 10 ms
OPENSMILE_SETS = {"egemaps": ("eGeMAPSv02", 25, False), "compare": ("ComParE_2016", 65, True)}  # set, values, deltas
DELTA_WINDOW = 2  # frames each side of the regression deltas (openSMILE's default)


def load_encoder(spec: EncoderSpec, device: str = "auto", dtype: str = "float32", adapter=None) -> Encoder:
    """Build the encoder `spec` describes on `device` in `dtype`; `adapter` (a bundle's LoRA
    adapter, model/adapter.py) is merged into a Whisper encoder's weights."""
    if adapter is not None and spec.kind != "whisper":
        raise BundleError(f"An adapter is for a Whisper encoder, not a '{spec.kind}' one.")
    if spec.kind in OPENSMILE_SETS:
        return OpenSmileEncoder(spec)
    if spec.kind == "whisper":
        return WhisperSpeechEncoder(spec, device, dtype, adapter=adapter)
    return SSLEncoder(spec, device, dtype)


class SSLEncoder:
    """A transformers speech encoder (HuBERT, wav2vec 2.0, WavLM) by hub id or local folder."""

    def __init__(
        self, spec: EncoderSpec, device: str = "auto", dtype: str = "float32", max_batch_s: float = 64.0
    ) -> None:
        import torch

        why = configure(self, spec, device, dtype, max_batch_s)
        self.model, self.normalize_waveform = _load_ssl(spec)
        self.digest = weights_digest(self.model)
        self.model = place(self.model, self.device, self.compute)
        log.info("encoder %s on %s in %s (%s)", spec.name, self.device, self.compute, why)
        cfg = self.model.config
        self.dim = cfg.hidden_size
        self.num_layers = cfg.num_hidden_layers + 1 if spec.layer == "weighted" else 1
        if isinstance(spec.layer, int) and spec.layer > cfg.num_hidden_layers:
            raise ConfigError(
                f"Setting encoder.layer = {spec.layer} is out of range: "
                f"'{spec.name}' has hidden states 0 to {cfg.num_hidden_layers}."
            )
        self.frame_hop_s = float(np.prod(cfg.conv_stride)) / SAMPLE_RATE
        # Layer-norm feature encoders are exact under padding with an attention mask;
        # group-norm ones are not (see the module docstring).
        self.pads_exactly = cfg.feat_extract_norm == "layer"
        self.revision = getattr(cfg, "_commit_hash", None) or spec.revision
        self._torch = torch

    def frames(self, n_samples: int) -> int:
        """Frames the encoder outputs for a segment of n_samples (its strided convolutions)."""
        cfg = self.model.config
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
            n_samples = max(0, (n_samples - k) // s + 1)
        return n_samples

    def batches(self, sizes: Sequence[int]) -> list[list[int]]:
        """Group segment indices into forward passes that give exactly the lone result
        (`plan_batches`): layer-norm encoders take any lengths together, group-norm ones
        only equal lengths."""
        return plan_batches(sizes, self.pads_exactly, self.max_batch_samples)

    def forward(self, wave: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """One forward pass: wave (B, N) -> (B, T, D) or (B, K, T, D), in the model's dtype."""
        want_all = self.spec.layer != "last"
        out = self.model(wave, attention_mask=attention_mask, output_hidden_states=want_all, return_dict=True)
        if self.spec.layer == "last":
            return out.last_hidden_state
        if self.spec.layer == "weighted":
            return self._torch.stack(out.hidden_states, dim=1)
        return out.hidden_states[self.spec.layer]

    def encode(self, segments: Sequence[np.ndarray]) -> Embeddings:
        torch = self._torch
        waves = [torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in segments]
        if self.normalize_waveform:  # per segment, over its own samples only
            waves = [(w - w.mean()) / torch.sqrt(w.var(correction=0) + 1e-7) for w in waves]
        per_segment: list[torch.Tensor | None] = [None] * len(waves)
        with torch.inference_mode():
            for idx in self.batches([len(w) for w in waves]):
                wave, n = pad_sequences([waves[i] for i in idx])  # (b, N), (b,)
                mask = None
                if len(idx) > 1 and self.pads_exactly:
                    mask = (torch.arange(wave.shape[1])[None, :] < n[:, None]).long()
                    mask = mask.to(self.device)
                hidden = self.forward(wave.to(self.device, self.dtype), mask).float()
                for j, i in enumerate(idx):
                    per_segment[i] = hidden[j, ..., : self.frames(int(n[j])), :]
        return collect(per_segment, self.spec.layer == "weighted", self.frame_hop_s, self.device)


def _load_ssl(spec: EncoderSpec):
    """Load the transformers model and whether it expects zero-mean unit-variance input."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load is noise in a live terminal

    config = from_pretrained(AutoConfig, spec)
    if config.model_type not in SSL_MODEL_TYPES:
        raise EncoderLoadError(
            f"Encoder '{spec.name}' is a '{config.model_type}' model; emomon takes {', '.join(SSL_MODEL_TYPES)}."
        )
    model = from_pretrained(AutoModel, spec, config=config, use_safetensors=True)  # never a pickle
    try:
        extractor = from_pretrained(AutoFeatureExtractor, spec)
        normalize = bool(getattr(extractor, "do_normalize", False))
    except EncoderLoadError:
        # No preprocessor_config.json: fairseq's rule is that layer-norm models were
        # trained on normalised waveforms and group-norm ones on raw ones.
        normalize = config.feat_extract_norm == "layer"
        log.info("encoder %s has no feature-extractor config; normalize=%s", spec.name, normalize)
    return model, normalize


def deltas(x: np.ndarray, window: int = DELTA_WINDOW) -> np.ndarray:
    """Regression deltas of (T, D) frames over +-window frames, edges repeated (as HTK/openSMILE)."""
    padded = np.pad(x, ((window, window), (0, 0)), mode="edge")
    T = len(x)
    num = sum(
        n * (padded[window + n : window + n + T] - padded[window - n : window - n + T]) for n in range(1, window + 1)
    )
    return (num / (2 * sum(n * n for n in range(1, window + 1)))).astype(np.float32)


class OpenSmileEncoder:
    """openSMILE low-level descriptors every 10 ms on the CPU: eGeMAPSv02 (25 values) or
    ComParE_2016 (65 values and their regression deltas: 130).

    openSMILE takes one signal per call and releases the interpreter lock while it runs, so
    the segments of one `encode` call are spread over `threads` threads, each with its own
    openSMILE instance (default: as many as torch may use, `torch.get_num_threads()`)."""

    def __init__(self, spec: EncoderSpec | None = None, threads: int | None = None) -> None:
        import torch

        self.spec = spec or EncoderSpec(kind="egemaps", name="eGeMAPSv02")
        self.feature_set, values, self.with_deltas = OPENSMILE_SETS[self.spec.kind]
        self.smile = SmileLLD(self.feature_set, SAMPLE_RATE)
        if self.smile.dim != values:
            raise EncoderLoadError(
                f"openSMILE's {self.feature_set} gave {self.smile.dim} descriptors instead of {values}."
            )
        self.threads = max(1, threads or torch.get_num_threads())
        self._pool = None
        self._local = threading.local()
        self.dim = values * (2 if self.with_deltas else 1)
        self.num_layers = 1
        self.frame_hop_s = OPENSMILE_HOP_S
        self.device = torch.device("cpu")
        self.compute = "float32"  # openSMILE computes in float32 on the CPU, whatever [runtime] says
        self.digest = ""  # no weights: the openSMILE version (revision) names it
        self.revision = f"opensmile-{importlib.metadata.version('opensmile')}"

    def _descriptors(self, segment: np.ndarray) -> np.ndarray:
        """One segment's (frames, dim) features, on a pool thread's own openSMILE instance."""
        smile = getattr(self._local, "smile", None)
        if smile is None:
            smile = self._local.smile = SmileLLD(self.feature_set, SAMPLE_RATE)
        return self._with_deltas(smile(segment))

    def _with_deltas(self, lld: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([lld, deltas(lld)], axis=1) if self.with_deltas else lld)

    def encode(self, segments: Sequence[np.ndarray]) -> Embeddings:
        import torch

        if self.threads == 1 or len(segments) == 1:
            feats = [self._with_deltas(self.smile(s)) for s in segments]
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="emomon-opensmile")
            feats = list(self._pool.map(self._descriptors, segments))
        padded, lengths = pad_sequences([torch.from_numpy(f) for f in feats])
        return Embeddings(padded, lengths, self.frame_hop_s)
