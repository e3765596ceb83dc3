"""What a model is made of: the encoder and regressor specifications.

Plain frozen dataclasses with no torch import, so that config.toml and bundle.json can be
read and checked before any heavy library loads. Each maps onto a TOML table
(`[encoder]`, `[regressor]`) and onto the same-named entry of a bundle's `bundle.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_ENCODER = "facebook/hubert-large-ll60k"


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder and which of its layers; saved in every bundle.

    `layer`: "last" (the paper: `last_hidden_state`), an index into transformers'
    `hidden_states` (0 = the input to the first transformer layer, i = layer i's output),
    or "weighted" for a learned softmax-weighted sum of all of them (SUPERB style; the
    weights are trained with the regressors).
    """

    kind: Literal["ssl", "egemaps"] = "ssl"
    name: str = DEFAULT_ENCODER  # hub id or local folder (ssl only)
    revision: str = "main"  # branch, tag or commit on the hub (ignored for local folders)
    layer: Literal["last", "weighted"] | int = "last"

    def __post_init__(self) -> None:
        if isinstance(self.layer, int) and self.layer < 0:
            raise ValueError(f"layer must be 'last', 'weighted' or an index >= 0, not {self.layer}")
        if self.kind == "egemaps" and self.layer != "last":
            raise ValueError("the egemaps encoder has a single layer: use layer = 'last'")

    @property
    def encoder_id(self) -> str:
        """A stable name for caches and logs: kind, name, revision and layer."""
        if self.kind == "egemaps":
            return "egemaps:eGeMAPSv02-lld"
        return f"ssl:{self.name}@{self.revision}:layer={self.layer}"


DEFAULT_FF = {1: (256, 64, 8), 2: (256, 128, 64)}


@dataclass(frozen=True)
class RegressorSpec:
    """Hyper-parameters of one regressor; saved in every bundle and rebuilt from it."""

    arch: Literal[1, 2] = 2
    head: Literal["per_emotion", "shared"] = "per_emotion"  # nine models, or one with nine outputs
    conv_channels: tuple[int, ...] = (768, 384, 192)
    kernel_size: int = 3
    lstm_hidden: int = 512
    lstm_layers: int = 2
    ff_dims: tuple[int, ...] = ()  # hidden sizes of the feed-forward head; () = the paper's

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, not {self.kernel_size}")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise ValueError("conv_channels must list at least one positive channel count")
        if self.lstm_hidden < 1 or self.lstm_layers < 1 or any(d < 1 for d in self.ff_dims):
            raise ValueError("lstm_hidden, lstm_layers and ff_dims must be positive")

    @property
    def ff(self) -> tuple[int, ...]:
        return self.ff_dims or DEFAULT_FF[self.arch]
