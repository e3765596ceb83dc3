"""What every encoder shares (encoder.py's SSL and openSMILE encoders, whisper.py's):
the `Embeddings` they return and the `Encoder` interface, the device and compute dtype
(`auto` picks bfloat16 where it has fast kernels, int8 on other CPUs), batching under a
memory budget, padding, the weights' digest, and transformers' `from_pretrained` from a
local folder or cache before the hub.

torch and transformers are imported inside the functions that need them, so that
`emomon --help` stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .audio import SAMPLE_RATE
from .errors import ConfigError, EncoderLoadError
from .specs import EncoderSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger("emomon")


@dataclass
class Embeddings:
    """A batch of frame embeddings. Frames at or past a segment's length are zero."""

    features: torch.Tensor  # (B, T, D), or (B, K, T, D) for layer="weighted"; float32
    lengths: torch.Tensor  # (B,) int64: true frame counts
    frame_hop_s: float  # seconds between frames

    def segment(self, i: int) -> torch.Tensor:
        """Segment i's real frames: (T_i, D) or (K, T_i, D)."""
        return self.features[i, ..., : int(self.lengths[i]), :]


class Encoder(Protocol):
    spec: EncoderSpec
    digest: str  # weights_digest of the encoder's weights; "" for openSMILE
    dim: int  # D
    num_layers: int  # K: hidden states stacked for layer="weighted" (1 otherwise)
    frame_hop_s: float
    device: torch.device

    def encode(self, segments: Sequence[np.ndarray]) -> Embeddings: ...


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Setting device = '{device}' asks for CUDA, but no CUDA GPU is available.")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"Setting device = '{device}' is not a device (use auto, cpu or cuda).") from e


DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")


def resolve_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of the encoder's weights and input (int8 keeps float32 activations)."""
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.float32}
    if dtype not in table:
        raise ConfigError(f"Setting dtype = '{dtype}' is not one of {', '.join(DTYPES)}.")
    return table[dtype]


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU's model name: timings compare only on the same one."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def fast_bf16(device: str | torch.device) -> bool:
    """Whether bfloat16 has fast kernels here: on CUDA GPUs that support it (Ampere and
    later); on a CPU only with native bf16 instructions (AMX or AVX512-BF16) that oneDNN
    uses. Without them PyTorch falls back to reference kernels, many times slower than
    float32 (docs/architecture.md, "Measurements behind the code")."""
    import torch

    if torch.device(device).type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: treat its absence as "no"
        onednn = False
    return onednn and bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def choose_dtype(dtype: str, device: str | torch.device) -> tuple[str, str]:
    """The compute dtype for `dtype` on `device`, and why. "auto":
    - bfloat16 where it has fast kernels (CUDA with bf16; CPUs with AMX or AVX512-BF16);
    - int8 dynamic quantisation of the linear layers on other CPUs, where bfloat16 is slow;
    - float32 on other GPUs, and where PyTorch no longer has dynamic quantisation.
    Speed and agreement with float32 of each: docs/model.md, docs/benchmarks.md."""
    import torch

    if dtype != "auto":
        resolve_dtype(dtype)  # an unknown name is one sentence
        return dtype, "as configured"
    if fast_bf16(device):
        return "bfloat16", "auto: fast bfloat16 kernels here"
    if torch.device(device).type == "cpu" and hasattr(torch.ao.quantization, "quantize_dynamic"):
        return "int8", "auto: no fast bfloat16 kernels on this CPU; int8 linear layers measured faster"
    return "float32", "auto: no fast bfloat16 kernels here"


def pad_sequences(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(T_i, ...)] -> zero-padded (B, T_max, ...) and lengths (B,)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    return pad_sequence(list(seqs), batch_first=True), lengths


def collect(per_segment: Sequence[torch.Tensor], mixed: bool, hop_s: float, device) -> Embeddings:
    """Each segment's (T_i, D) frames, or (K, T_i, D) for layer="weighted", padded into one batch."""
    if mixed:  # (K, T, D) -> pad along T
        feats, lengths = pad_sequences([s.transpose(0, 1) for s in per_segment])
        feats = feats.transpose(1, 2)  # (B, K, T, D)
    else:
        feats, lengths = pad_sequences(per_segment)  # (B, T, D)
    return Embeddings(feats, lengths.to(device), hop_s)


def place(model, device: torch.device, compute: str):
    """`model` on `device` in the compute dtype, in eval mode; int8 quantises its linear layers."""
    model = model.to(device, resolve_dtype(compute)).eval()
    if compute == "int8":
        if device.type != "cpu":
            raise ConfigError("Setting dtype = 'int8' (dynamic quantisation) runs on the CPU only; use device = 'cpu'.")
        model = quantize_linear(model)
    if compute == "bfloat16" and not fast_bf16(device):
        log.warning("dtype bfloat16 has no fast kernels here: expect it to be ~10x slower than float32")
    return model


def configure(encoder, spec: EncoderSpec, device: str, dtype: str, max_batch_s: float) -> str:
    """The settings every transformers encoder starts from: spec, batch budget, device and
    compute dtype (set on `encoder`); returns why that dtype was chosen."""
    encoder.spec = spec
    encoder.device = resolve_device(device)
    encoder.compute, why = choose_dtype(dtype, encoder.device)
    encoder.dtype = resolve_dtype(encoder.compute)
    # Dynamic int8 quantisation takes each activation's scale from the whole call, so a
    # segment's result would depend on the segments it shares a forward pass with (shares
    # moved by 0.02 between a batched and a one-by-one replay): under int8 every segment
    # runs alone (plan_batches with no room for a second one).
    encoder.max_batch_samples = 0 if encoder.compute == "int8" else int(max_batch_s * SAMPLE_RATE)
    return why


def plan_batches(sizes: Sequence[int], any_lengths: bool, max_samples: int) -> list[list[int]]:
    """Group segment indices (of `sizes` samples) into forward passes.

    Segments go in order of length, so that little is padded; unequal lengths share a pass
    only when `any_lengths` (the encoder is exact under padding); no pass holds more than
    `max_samples` of padded audio (attention memory grows with B * T^2).
    """
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    out: list[list[int]] = []
    for i in order:
        if out:
            batch = out[-1]
            longest = max(sizes[i], sizes[batch[-1]])
            same = any_lengths or sizes[batch[-1]] == sizes[i]
            if same and longest * (len(batch) + 1) <= max_samples:
                batch.append(i)
                continue
        out.append([i])
    return out


def weights_digest(model) -> str:
    """SHA-256 of a model's state dict rounded to float16, names in sorted order.

    Names an encoder's weights whatever file they came from: a float32 checkpoint and its
    float16 conversion (CTranslate2's Whisper) give the same digest; other weights do not.
    Taken before any int8 quantisation.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float16).contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def quantize_linear(model):
    """int8 dynamic quantisation of the linear layers (weights int8, activations quantised
    per batch); convolutions and norms stay float32. PyTorch deprecates this API in favour
    of torchao; where it is gone, "auto" picks float32 instead (choose_dtype)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def from_pretrained(loader, spec: EncoderSpec, **kwargs):
    """`loader.from_pretrained` from a local folder or the local cache first, the hub last.

    Trying the cache first keeps a machine with no network from waiting through the hub
    client's retries when the weights are already there. Model weights are loaded with
    `use_safetensors=True` by the callers: a folder or hub repository that has only a
    pickled checkpoint (pytorch_model.bin) is refused rather than unpickled.
    """
    kwargs.update(revision=spec.revision, trust_remote_code=False)
    local = Path(spec.name).is_dir()
    try:
        return loader.from_pretrained(spec.name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        if local:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EncoderLoadError(
                f"Encoder folder '{spec.name}' cannot be loaded as a transformers model: {first}"
            ) from e
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its per-retry warnings are noise next to our sentence
    try:
        return loader.from_pretrained(spec.name, **kwargs)
    except (OSError, ValueError) as e:
        raise EncoderLoadError(
            f"Encoder '{spec.name}' (revision '{spec.revision}') is neither a local folder nor in "
            "the local Hugging Face cache, and could not be downloaded: download it on a "
            "connected machine (hf download) and set the encoder name to its local folder."
        ) from e
    finally:
        hub_log.setLevel(level)
