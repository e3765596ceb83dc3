"""Low-rank adapters (LoRA) on a transformer encoder's linear layers, as Hugging Face PEFT's
LoRA: beside each frozen weight W (out, in) two small matrices A (r, in) and B (out, r),
so that the layer computes W x + (alpha / r) B A x. Only A and B train; they are saved
alone (a few hundred kB for Whisper base's first three layers at r = 16), and folded into
W when a model loads (`merge`), so that inference costs exactly what it costs without them.

B starts at zero, so an adapter that has not trained yet changes nothing. Names follow
the encoder's own modules ("layers.0.self_attn.q_proj"), with ".lora_a" / ".lora_b".

A bundle carries an `Adapter` (model/bundle.py: adapter.safetensors, its SHA-256 checked
before it is parsed); the Whisper encoder merges it into its weights when it loads, after
the base weights' digest is taken and before any cast or quantisation, so the Predictor,
int8 and the ONNX export all run the adapted weights. Issue 39 (the default model v5)
trains them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import BundleError

# The linear layers of a Whisper (or HuBERT, wav2vec 2.0) encoder layer: attention and feed-forward.
TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class LoraSpec:
    """Which layers get adapters, and their size."""

    rank: int = 16
    alpha: float = 32.0  # the update is scaled by alpha / rank
    layers: tuple[int, ...] = (0, 1, 2)  # indices into the encoder's layer list (0: the first layer)
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA rank must be >= 1 and alpha > 0, not {self.rank} and {self.alpha}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class LayersSpec:
    """Fine-tuned layers: their own trained weights replace the base's. With `delta` the
    bundle holds what training changed, W - W_base, in float16 (half the bytes of float32
    weights; the rounding is 2^-11 of the change, not of the weight), added to the base
    weights that the bundle's encoder_digest names; without it, the weights themselves."""

    layers: tuple[int, ...] = (2,)  # indices into the encoder's layer list (0: the first layer)
    delta: bool = False


@dataclass
class Adapter:
    """A trained adapter as a bundle carries it: its settings and its tensors: LoRA
    matrices (`LoraSpec`, float32) or whole fine-tuned layers (`LayersSpec`: float32
    weights, or float16 differences from the base weights)."""

    spec: LoraSpec | LayersSpec
    state: dict[str, torch.Tensor]

    @property
    def kind(self) -> str:
        return "lora" if isinstance(self.spec, LoraSpec) else "layers"

    def describe(self) -> str:
        names = ", ".join(str(i + 1) for i in self.spec.layers)
        if isinstance(self.spec, LoraSpec):
            return f"LoRA r{self.spec.rank} on layer{'s' * (len(self.spec.layers) > 1)} {names}"
        return f"fine-tuned layer{'s' * (len(self.spec.layers) > 1)} {names}"

    def apply(self, encoder: nn.Module) -> None:
        """Put the adapter into the encoder's weights (in place, before any cast or quantisation)."""
        if isinstance(self.spec, LoraSpec):
            merge(encoder, self.spec, self.state)
        else:
            replace_layers(encoder, self.spec, self.state)


class LoraLinear(nn.Module):
    """A frozen nn.Linear with a trainable low-rank update beside it."""

    def __init__(self, base: nn.Linear, rank: int, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., r) -> (..., out): never forms the (out, in) update
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def delta(self) -> torch.Tensor:
        """The update to W, (out, in)."""
        return (self.lora_b @ self.lora_a) * self.scale


def _modules(encoder: nn.Module, spec: LoraSpec) -> Iterable[tuple[str, nn.Module, str]]:
    """(name, parent module, attribute) of every linear layer the spec adapts in `encoder.layers`."""
    layers = encoder.layers
    for i in spec.layers:
        if not 0 <= i < len(layers):
            raise BundleError(f"The adapter names encoder layer {i}; this encoder has layers 0 to {len(layers) - 1}.")
        for target in spec.targets:
            *path, attr = target.split(".")
            parent = layers[i]
            for step in path:
                parent = getattr(parent, step, None)
            if parent is None or not isinstance(getattr(parent, attr, None), nn.Linear | LoraLinear):
                raise BundleError(f"The adapter names '{target}' in encoder layer {i}, which has no such linear layer.")
            yield f"layers.{i}.{target}", parent, attr


def add_lora(encoder: nn.Module, spec: LoraSpec) -> dict[str, LoraLinear]:
    """Put a LoraLinear around each linear layer the spec names in `encoder.layers` (in
    place); everything else in the encoder is frozen. Returns the adapters by name."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    out = {}
    for name, parent, attr in _modules(encoder, spec):
        wrapped = LoraLinear(getattr(parent, attr), spec.rank, spec.scale)
        setattr(parent, attr, wrapped)
        out[name] = wrapped
    return out


def adapter_state(adapters: dict[str, LoraLinear]) -> dict[str, torch.Tensor]:
    """The trained matrices, float32, by name: what a bundle saves (safetensors)."""
    state = {}
    for name, m in adapters.items():
        state[f"{name}.lora_a"] = m.lora_a.detach().to("cpu", torch.float32).contiguous()
        state[f"{name}.lora_b"] = m.lora_b.detach().to("cpu", torch.float32).contiguous()
    return state


def unwrap(encoder: nn.Module, spec: LoraSpec) -> None:
    """Fold every LoraLinear the spec names into its base weight and put the plain nn.Linear back."""
    with torch.no_grad():
        for _, parent, attr in _modules(encoder, spec):
            m = getattr(parent, attr)
            if isinstance(m, LoraLinear):
                m.base.weight += m.delta().to(m.base.weight.dtype)
                setattr(parent, attr, m.base)


def merge(encoder: nn.Module, spec: LoraSpec, state: dict[str, torch.Tensor]) -> None:
    """Fold a saved adapter into the plain linear layers' weights (in place, before any cast
    or quantisation): W += (alpha / r) B A. Refused in one sentence when the state does not
    fit the spec or the layers (another encoder's adapter)."""
    names = {name for name, _, _ in _modules(encoder, spec)}
    expected = {f"{n}.lora_{m}" for n in names for m in "ab"}
    if set(state) != expected:
        extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
        raise BundleError(
            f"The adapter does not fit its settings: {len(missing)} matrices missing "
            f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''}), {len(extra)} unknown "
            f"({', '.join(extra[:2])}{', ...' if len(extra) > 2 else ''})."
        )
    with torch.no_grad():
        for name, parent, attr in _modules(encoder, spec):
            linear = getattr(parent, attr)
            a, b = state[f"{name}.lora_a"], state[f"{name}.lora_b"]
            if a.shape != (spec.rank, linear.in_features) or b.shape != (linear.out_features, spec.rank):
                raise BundleError(
                    f"The adapter's '{name}' is {tuple(b.shape)} x {tuple(a.shape)}; this encoder's layer is "
                    f"({linear.out_features}, {linear.in_features}) at rank {spec.rank}: it was trained on another "
                    "encoder."
                )
            linear.weight += (b.to(torch.float32) @ a.to(torch.float32) * spec.scale).to(linear.weight.dtype)


def layers_state(
    encoder: nn.Module, spec: LayersSpec, base: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The weights of the layers `spec` names, by the encoder's own names: what a bundle
    saves. Float32 weights; with `base` (the same names, before training: `layers_state`
    of the untrained encoder) their float16 differences from it, for a `delta` spec."""
    state = {  # copies: a snapshot taken before training must not follow the weights as it trains
        f"layers.{i}.{name}": t.detach().to("cpu", torch.float32, copy=True).contiguous()
        for i in spec.layers
        for name, t in encoder.layers[i].state_dict().items()
    }
    if base is None:
        return state
    return {name: (t - base[name].to(torch.float32)).to(torch.float16).contiguous() for name, t in state.items()}


def replace_layers(encoder: nn.Module, spec: LayersSpec, state: dict[str, torch.Tensor]) -> None:
    """Load fine-tuned layers into the encoder (in place); refused in one sentence when the
    tensors do not fit its layers (another encoder's)."""
    layers = encoder.layers
    if not all(0 <= i < len(layers) for i in spec.layers):
        raise BundleError(
            f"The adapter names encoder layers {list(spec.layers)}; this encoder has layers 0 to {len(layers) - 1}."
        )
    own = {f"layers.{i}.{n}": t for i in spec.layers for n, t in layers[i].state_dict().items()}
    if set(state) != set(own):
        raise BundleError(
            f"The fine-tuned layers do not fit this encoder: {len(set(own) - set(state))} tensors missing, "
            f"{len(set(state) - set(own))} unknown."
        )
    for name, t in own.items():
        if tuple(state[name].shape) != tuple(t.shape):
            raise BundleError(
                f"The adapter's '{name}' is {tuple(state[name].shape)}; this encoder's is {tuple(t.shape)}: it was "
                "trained on another encoder."
            )
    with torch.no_grad():
        for name, t in own.items():
            new = state[name].to(torch.float32)
            t.copy_((t.to(torch.float32) + new if spec.delta else new).to(t.dtype))
