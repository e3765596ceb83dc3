"""Which of the encoder's layers an adapted fit trains (`[train] adapt_layers`, checked
against the encoder and head settings), and `EncoderTop`: those layers of Whisper base's
encoder as one module over the cached hidden state below them (training/adapt.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..model.errors import ConfigError, EmomonError

if TYPE_CHECKING:
    from ..config import Config


def trained_layers(cfg: Config) -> tuple[int, ...]:
    """The encoder layers (1 = the first) an adapted fit trains; one sentence where the
    settings cannot adapt."""
    enc, t = cfg.encoder, cfg.train
    if enc.kind != "whisper" or not isinstance(enc.layer, int) or enc.layer < 1:
        raise ConfigError(
            '[train] adapt trains a Whisper encoder\'s layers: it needs [train.encoder] kind = "whisper" and a layer '
            f"number >= 1 (not kind '{enc.kind}', layer {enc.layer!r})."
        )
    spec = cfg.regressor
    if spec.arch != 3 or spec.attentive:
        raise ConfigError(
            "[train] adapt trains under the pooled head: it needs [train.regressor] arch 3 without attention."
        )
    layers = tuple(sorted(set(t.adapt_layers))) or tuple(range(1, enc.layer + 1))
    if layers[-1] > enc.layer:
        raise ConfigError(f"[train] adapt_layers names layer {layers[-1]}, but the model reads layer {enc.layer}.")
    return layers


def start_layer(cfg: Config) -> int:
    """The hidden state adapted fits read from the cache: the input of the lowest trained layer."""
    return trained_layers(cfg)[0] - 1


class EncoderTop(nn.Module):
    """Layers start+1 .. L (1 = the first) of a Whisper encoder over its hidden state
    `start`: (B, T, D) frames and true lengths (B,) -> (B, T, D); padded frames never
    reach real ones (key padding, as WhisperSpeechEncoder.forward)."""

    def __init__(self, layers: nn.ModuleList, start: int) -> None:
        super().__init__()
        self.layers, self.start = layers, start

    @property
    def top(self) -> int:
        return self.start + len(self.layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from ..model.whisper import key_padding_mask

        attn = key_padding_mask(lengths, x)
        for layer in self.layers:
            out = layer(x, attn)
            x = out[0] if isinstance(out, tuple) else out
        return x


def load_top(cfg: Config, digest: str) -> EncoderTop:
    """The frozen top of the configured encoder (float32), from the weights the cache's
    encoder was built from (`digest`: refused in one sentence if they are others)."""
    from ..model.compute import weights_digest
    from ..model.whisper import load_whisper

    model, _, _ = load_whisper(cfg.encoder)
    if digest and weights_digest(model) != digest:
        raise EmomonError(f"The weights of encoder '{cfg.encoder.name}' changed while the run read them.")
    start = start_layer(cfg)
    top = EncoderTop(nn.ModuleList(model.layers[start : cfg.encoder.layer]), start).float().eval()
    for p in top.parameters():
        p.requires_grad_(False)
    return top
