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
    dropout: float = 0.0  # on the pooled vector and between feed-forward layers, in training only
    output: Literal["", "relu", "sigmoid", "none"] = ""  # output activation; "" = the paper's for the arch

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, not {self.kernel_size}")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise ValueError("conv_channels must list at least one positive channel count")
        if self.lstm_hidden < 1 or self.lstm_layers < 1 or any(d < 1 for d in self.ff_dims):
            raise ValueError("lstm_hidden, lstm_layers and ff_dims must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    @property
    def ff(self) -> tuple[int, ...]:
        return self.ff_dims or DEFAULT_FF[self.arch]

    @property
    def output_activation(self) -> str:
        """The paper: ReLU after Architecture 2 (shares are >= 0), none after Architecture 1.
        A ReLU output can die (stuck at 0 with no gradient) on small data; "sigmoid" keeps
        outputs in (0, 1) like shares and always passes a gradient."""
        return self.output or ("relu" if self.arch == 2 else "none")


@dataclass(frozen=True)
class TrainSettings:
    """The training recipe ([train] table): the paper's defaults."""

    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 20  # epochs without a better devel mean Spearman before stopping; 0 = never early
    seed: int = 0
    normalization: Literal["global", "speaker"] = "global"  # see model/normalize.py
    prior_frames: int = 3000  # "speaker" mode: frames the training statistics weigh at a session's start
    cache_dir: str = ""  # embedding cache; "" = $XDG_CACHE_HOME/emomon/embeddings (~/.cache/...)
    out: str = ""  # bundle folder to write; "" = models/<dataset>-<encoder>-arch<N>

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0 and patience >= 0")


@dataclass(frozen=True)
class DatasetSettings:
    """What to train or evaluate on ([dataset] table); flags override it."""

    kind: Literal["", "compare23", "csv", "emodb"] = ""
    data: str = ""  # folder (compare23, emodb) or manifest CSV (csv)
    target: Literal["recognition", "onehot"] = "recognition"  # Emo-DB labels -> shares
    devel_fraction: float = 0.2  # csv without a split column: share of speakers held out
