"""Settings: what a model is made of, how it is trained, how the monitor runs.

Plain frozen dataclasses with no heavy import, so that config.toml and bundle.json can be
read and checked before torch loads. Each maps onto a TOML table of the same name; the
encoder and regressor specs also onto the same-named entries of a bundle's bundle.json.
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


@dataclass(frozen=True)
class VadSettings:
    """The [vad] table of config.toml."""

    frame_ms: int = 30  # WebRTC VAD takes 10, 20 or 30 ms frames
    aggressiveness: int = 2  # 0 (keeps most) to 3 (most aggressive at calling audio non-speech)
    window_ms: int = 300  # recent audio looked at to open a segment
    open_ratio: float = 0.6  # voiced share of that window that opens a segment
    hangover_ms: int = 600  # recent audio looked at to close a segment: pauses shorter than this are bridged
    close_ratio: float = 0.9  # unvoiced share of the hang-over that closes the segment
    pre_roll_ms: int = 30  # audio kept before the first voiced frame
    post_roll_ms: int = 0  # audio kept after the last voiced frame (the VAD already runs ~100 ms late)
    min_segment_s: float = 0.5
    max_segment_s: float = 10.0
    # WebRTC VAD calls steady noise louder than about -30 dBFS speech. The VAD hears the input
    # turned down so that the background stays at or below this level; 0 turns that off.
    max_background_dbfs: float = -40.0
    # WebRTC VAD hears below 4 kHz only. Inside a segment, a frame right after a voiced one whose
    # 4-8 kHz level is this far above that band's background continues it (word-final s, sch, t); 0 = off.
    high_band_db: float = 6.0

    def __post_init__(self) -> None:
        if not -80.0 <= self.max_background_dbfs <= 0.0:
            raise ValueError(f"max_background_dbfs must be between -80 and 0 dBFS, not {self.max_background_dbfs}")
        if self.high_band_db < 0:
            raise ValueError(f"high_band_db must be 0 (off) or more, not {self.high_band_db}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (WebRTC VAD's frame sizes), not {self.frame_ms}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness}")
        if min(self.window_ms, self.hangover_ms) < self.frame_ms:
            raise ValueError(f"window_ms and hangover_ms must each hold at least one {self.frame_ms} ms frame")
        if not (0 < self.open_ratio <= 1 and 0 < self.close_ratio <= 1):
            raise ValueError("open_ratio and close_ratio must be in (0, 1]")
        if not 0.3 <= self.min_segment_s < self.max_segment_s:
            raise ValueError("min_segment_s must be >= 0.3 (the model's minimum) and below max_segment_s")


@dataclass(frozen=True)
class ModelSettings:
    """[model]: which bundle the monitor runs."""

    bundle: str = ""  # bundle folder; "" = the shipped default (model/default)
    encoder: str = ""  # local folder to load an SSL bundle's encoder from instead of its hub id


@dataclass(frozen=True)
class MonitorSettings:
    """[monitor]: the live and replay pipeline."""

    csv: str = ""  # per-segment CSV log; "" = none
    input: str = ""  # live: input device index or (part of its) name; "" = the system default
    duration_s: float = 0.0  # live: stop after this long; 0 = until Ctrl-C or SIGTERM
    dashboard: bool = True  # the Rich dashboard on a terminal; false = one plain line per segment
    speed: float = 1.0  # replay: 1 = real time, 0 = as fast as possible (back-pressure, nothing dropped)
    queue_size: int = 8  # segments waiting for the model; live mode drops the oldest beyond this
    max_batch: int = 8  # segments run through the model together when they queue up

    def __post_init__(self) -> None:
        if self.speed < 0 or self.duration_s < 0 or self.queue_size < 1 or self.max_batch < 1:
            raise ValueError("speed and duration_s must be >= 0, queue_size and max_batch >= 1")
