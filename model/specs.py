"""Settings: what a model is made of, how it is trained, how the monitor runs.

Plain frozen dataclasses with no heavy import, so that config.toml and bundle.json can be
read and checked before torch loads. Each maps onto a TOML table of the same name; the
encoder and regressor specs also onto the same-named entries of a bundle's bundle.json.
"""

from __future__ import annotations

import re
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

    kind: Literal["ssl", "egemaps", "compare"] = "ssl"
    name: str = DEFAULT_ENCODER  # hub id or local folder (ssl only)
    revision: str = "main"  # branch, tag or commit on the hub (ignored for local folders)
    layer: Literal["last", "weighted"] | int = "last"

    def __post_init__(self) -> None:
        if isinstance(self.layer, int) and self.layer < 0:
            raise ValueError(f"layer must be 'last', 'weighted' or an index >= 0, not {self.layer}")
        if self.kind != "ssl" and self.layer != "last":
            raise ValueError(f"the {self.kind} encoder has a single layer: use layer = 'last'")

    @property
    def encoder_id(self) -> str:
        """A stable name for caches and logs: kind, name, revision and layer."""
        if self.kind == "egemaps":
            return "egemaps:eGeMAPSv02-lld"
        if self.kind == "compare":
            return "compare:ComParE_2016-lld+delta"
        return f"ssl:{self.name}@{self.revision}:layer={self.layer}"


DEFAULT_FF = {1: (256, 64, 8), 2: (256, 128, 64), 3: (256, 128)}
POOLING_STATS = ("mean", "std", "min", "max")  # and "pNN", the NN-th percentile


@dataclass(frozen=True)
class RegressorSpec:
    """Hyper-parameters of one regressor; saved in every bundle and rebuilt from it.

    `arch` 1 and 2 are the paper's sequence regressors; 3 is emomon's pooled regressor:
    statistics of each input dimension over the segment's real frames (`pooling`), then
    the feed-forward head. It ignores the convolution and LSTM settings.
    """

    arch: Literal[1, 2, 3] = 2
    head: Literal["per_emotion", "shared"] = "per_emotion"  # nine models, or one with nine outputs
    conv_channels: tuple[int, ...] = (768, 384, 192)
    kernel_size: int = 3
    lstm_hidden: int = 512
    lstm_layers: int = 2
    ff_dims: tuple[int, ...] = ()  # hidden sizes of the feed-forward head; () = the paper's
    dropout: float = 0.0  # on the pooled vector and between feed-forward layers, in training only
    output: Literal["", "relu", "sigmoid", "softmax", "none"] = ""  # output activation; "" = the paper's for the arch
    pooling: tuple[str, ...] = ("mean", "std")  # arch 3: statistics over frames: mean, std, min, max, pNN

    def __post_init__(self) -> None:
        for stat in self.pooling:
            if stat not in POOLING_STATS and not (stat[:1] == "p" and stat[1:].isdigit() and int(stat[1:]) <= 100):
                raise ValueError(f"pooling statistic '{stat}' is not one of {', '.join(POOLING_STATS)} or p0 ... p100")
        if not self.pooling:
            raise ValueError("pooling must list at least one statistic")
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
        outputs in (0, 1) like shares and always passes a gradient; "softmax" makes the
        outputs one listener distribution over the emotions (summing to 1)."""
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
    # "speaker" mode: the session's own statistics never weigh more than this many frames, so
    # the prior keeps prior/(prior+cap) of the weight and a long one-emotion session does not
    # become its own "neutral"; 0 = no cap.
    session_frames: int = 0
    loss: Literal["mse", "ce"] = "mse"  # MSE on shares (the paper) or cross-entropy with soft targets
    cache_dir: str = ""  # embedding cache; "" = $XDG_CACHE_HOME/emomon/embeddings (~/.cache/...)
    out: str = ""  # bundle folder to write; "" = models/<dataset>-<encoder>-arch<N>

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0 and patience >= 0")
        if self.session_frames < 0 or self.prior_frames < 0:
            raise ValueError("prior_frames and session_frames must be >= 0")


DATASET_KINDS = ("compare23", "csv", "emodb", "ravdess")


def _names(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """A TOML list, or a string of comma-separated names."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclass(frozen=True)
class DatasetSettings:
    """What to train or evaluate on ([dataset] table); flags override it.

    Several corpora train together: `kind = ["emodb", "ravdess"]` with one `data` folder
    each, in the same order (a comma-separated string works too).
    """

    kind: str | tuple[str, ...] = ""
    data: str | tuple[str, ...] = ""  # folder (compare23, emodb, ravdess) or manifest CSV (csv), one per kind
    target: Literal["recognition", "onehot"] = "recognition"  # Emo-DB labels -> shares
    devel_fraction: float = 0.2  # csv without a split column: share of speakers held out
    trim: bool = True  # cut each file to its speech with the monitor's VAD, as live segments are

    def __post_init__(self) -> None:
        for k in self.kinds:
            if k not in DATASET_KINDS:
                raise ValueError(f"dataset kind '{k}' is not one of {', '.join(DATASET_KINDS)}")
        if self.kinds and self.paths and len(self.kinds) != len(self.paths):
            raise ValueError(f"{len(self.kinds)} dataset kinds need as many data paths, not {len(self.paths)}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return _names(self.kind)

    @property
    def paths(self) -> tuple[str, ...]:
        return _names(self.data)


@dataclass(frozen=True)
class EvaluationSettings:
    """[evaluation]: how `emomon train` measures a model before it trains the final one.

    A protocol is one of
      "CORPUS:split"   the corpus's own train/devel/test split (ComParE, CSV manifests);
      "CORPUS:loso"    leave-one-speaker-out over CORPUS, training on everything else;
      "CORPUS:kfoldK"  K speaker-grouped folds over CORPUS, training on everything else;
      "A>B"            trained on corpus A only, tested on corpus B over the emotions both label.
    Each is saved in the bundle's metrics as "CORPUS_loso", "A_to_B", ... `perturbations`
    scores every fold's test files again through a microphone-like change ("white:20",
    "pink:20" = noise at that SNR in dB, "gain:-12", "telephone") with the same models.
    """

    protocols: tuple[str, ...] = ()  # () = each corpus by its split when it has one, else loso
    perturbations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for p in self.protocols:
            if not re.fullmatch(r"[a-z0-9_]+:(split|loso|kfold\d+)|[a-z0-9_]+>[a-z0-9_]+", p):
                raise ValueError(f"evaluation protocol '{p}' is not CORPUS:split, CORPUS:loso, CORPUS:kfoldK or A>B")
        for p in self.perturbations:
            if not re.fullmatch(r"(white|pink):-?\d+(\.\d+)?|gain:[-+]?\d+(\.\d+)?|telephone", p):
                raise ValueError(f"perturbation '{p}' is not white:SNR, pink:SNR, gain:DB or telephone")


@dataclass(frozen=True)
class AugmentSettings:
    """[augment]: microphone-like changes to training audio, drawn per file and view, seeded.

    Each training file gets `views` changed copies besides the clean one; every epoch
    draws one of them per file. Each copy gets a random gain in +-`gain_db`, and with the
    given probabilities white or pink noise at an SNR in `snr_db`, a telephone band
    (8 kHz resampling, 300-3400 Hz) and a small room's reverberation.
    """

    views: int = 0  # 0 = no augmentation
    gain_db: float = 12.0
    noise: float = 0.5  # probability of added noise
    snr_db: tuple[float, ...] = (10.0, 30.0)
    telephone: float = 0.2
    reverb: float = 0.2

    def __post_init__(self) -> None:
        if self.views < 0 or self.gain_db < 0:
            raise ValueError("views and gain_db must be >= 0")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be [low, high], not {list(self.snr_db)}")
        if not all(0.0 <= p <= 1.0 for p in (self.noise, self.telephone, self.reverb)):
            raise ValueError("noise, telephone and reverb are probabilities in [0, 1]")


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
