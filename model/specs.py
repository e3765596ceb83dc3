"""What a model is made of and where it runs: the [train.encoder], [train.regressor], [model] and
[runtime] tables of config.toml.

Plain frozen dataclasses with no heavy import, so that config.toml and bundle.json can be
read and checked before torch loads. The encoder and regressor specs are also the
same-named entries of a bundle's bundle.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LAYERED = ("ssl", "whisper")  # transformers encoders: hidden states to choose from
WHISPER_BASE = "openai/whisper-base"  # the shipped model's encoder (model/whisper.py)
DEFAULT_LAYER = 3  # the shipped model's: Whisper base's third layer (docs/model.md)


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder and which of its layers; saved in every bundle.

    `kind`: "ssl" (HuBERT, wav2vec 2.0, WavLM through transformers), "whisper" (Whisper's
    encoder, any size, on each segment's own length: model/whisper.py), or openSMILE's
    descriptors ("egemaps", "compare").

    `layer`: "last" (the paper: `last_hidden_state`), an index into transformers'
    `hidden_states` (0 = the input to the first transformer layer, i = layer i's output),
    or "weighted" for a learned softmax-weighted sum of all of them (SUPERB style; the
    weights are trained with the regressors).

    The defaults are the shipped model's encoder; `EncoderSpec.paper()` is the paper's.
    """

    kind: Literal["ssl", "whisper", "egemaps", "compare"] = "whisper"
    name: str = WHISPER_BASE  # hub id or local folder (ssl and whisper)
    revision: str = "main"  # branch, tag or commit on the hub (ignored for local folders)
    layer: Literal["last", "weighted"] | int = DEFAULT_LAYER

    def __post_init__(self) -> None:
        if isinstance(self.layer, int) and self.layer < 0:
            raise ValueError(f"layer must be 'last', 'weighted' or an index >= 0, not {self.layer}")
        if self.kind not in LAYERED and self.layer == DEFAULT_LAYER:  # the default layer is for layered encoders
            object.__setattr__(self, "layer", "last")
        if self.kind not in LAYERED and self.layer != "last":
            raise ValueError(f"the {self.kind} encoder has a single layer: use layer = 'last'")

    @classmethod
    def paper(cls, **changes) -> EncoderSpec:
        """The paper's encoder: HuBERT-Large's last hidden state (Mohapatra et al., 2023)."""
        return cls(**{"kind": "ssl", "name": "facebook/hubert-large-ll60k", "layer": "last", **changes})

    @property
    def encoder_id(self) -> str:
        """A stable name for caches and logs: kind, name, revision and layer."""
        if self.kind == "egemaps":
            return "egemaps:eGeMAPSv02-lld"
        if self.kind == "compare":
            return "compare:ComParE_2016-lld+delta"
        return f"{self.kind}:{self.name}@{self.revision}:layer={self.layer}"


DEFAULT_FF = {1: (256, 64, 8), 2: (256, 128, 64), 3: (256, 128)}
POOLING_STATS = ("mean", "std", "min", "max", "amean", "astd")  # and "pNN", the NN-th percentile
ATTENTIVE_STATS = ("amean", "astd")  # weighted by a learned attention over frames


@dataclass(frozen=True)
class RegressorSpec:
    """Hyper-parameters of one regressor; saved in every bundle and rebuilt from it.

    `arch` 1 and 2 are the paper's sequence regressors; 3 is emomon's pooled regressor:
    statistics of each input dimension over the segment's real frames (`pooling`), then
    the feed-forward head. It ignores the convolution and LSTM settings. Its statistics
    "amean" and "astd" are attentive statistics pooling (Okabe et al., Interspeech 2018):
    a small layer (D -> `attention_dim` -> 1, tanh) scores every frame, a softmax over the
    real frames weighs them, and the weighted mean and standard deviation enter the head;
    those weights are the attention a segment reports.

    The defaults are the shipped model's regressor; `RegressorSpec.paper()` is the paper's.
    """

    arch: Literal[1, 2, 3] = 3
    head: Literal["per_emotion", "shared"] = "shared"  # one model with nine outputs, or nine models
    conv_channels: tuple[int, ...] = (768, 384, 192)
    kernel_size: int = 3
    lstm_hidden: int = 512
    lstm_layers: int = 2
    ff_dims: tuple[int, ...] = (256, 128)  # hidden sizes of the feed-forward head; () = the paper's for the arch
    dropout: float = 0.3  # on the pooled vector and between feed-forward layers, in training only
    output: Literal["", "relu", "sigmoid", "softmax", "none"] = "softmax"  # output activation; "" = the paper's
    # arch 3: statistics over frames: mean, std, min, max, pNN, amean, astd
    pooling: tuple[str, ...] = ("mean", "std", "p10", "p50", "p90")
    attention_dim: int = 128  # arch 3 with amean/astd: the frame scorer's hidden size
    # head "shared": this many heads, each from its own initialisation and dropout, trained
    # side by side on their own losses; the shares are their mean
    ensemble: int = 5

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
        if self.lstm_hidden < 1 or self.lstm_layers < 1 or any(d < 1 for d in self.ff_dims) or self.attention_dim < 1:
            raise ValueError("lstm_hidden, lstm_layers, ff_dims and attention_dim must be positive")
        if self.ensemble < 1 or (self.ensemble > 1 and self.head != "shared"):
            raise ValueError(f"ensemble must be >= 1, and above 1 only with head = 'shared', not {self.ensemble}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    @classmethod
    def paper(cls, arch: Literal[1, 2, 3] = 2, **changes) -> RegressorSpec:
        """The paper's regressor: one per emotion, its own output activation, no dropout."""
        paper = dict(head="per_emotion", ff_dims=(), dropout=0.0, output="", pooling=("mean", "std"), ensemble=1)
        return cls(**{**paper, "arch": arch, **changes})

    @property
    def attentive(self) -> bool:
        """Architecture 3 with attentive statistics: pooling has trained weights, so its
        statistics cannot be computed once before training."""
        return self.arch == 3 and any(s in ATTENTIVE_STATS for s in self.pooling)

    @property
    def attention_stride(self) -> int:
        """Encoder frames per attention weight: the paper's models attend after MaxPool(2)."""
        return 1 if self.arch == 3 else 2

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
class ModelSettings:
    """[model]: which bundle the monitor runs."""

    bundle: str = ""  # bundle folder; "" = the shipped default (model/default)
    encoder: str = ""  # local folder to load an SSL bundle's encoder from instead of its hub id


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how the model runs."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Encoder compute dtype. auto: bfloat16 where it has fast kernels (CUDA with bf16, CPUs
    # with AMX or AVX512-BF16), int8 dynamic quantisation of the linear layers on other CPUs,
    # float32 on other GPUs. openSMILE encoders always compute in float32.
    dtype: Literal["auto", "float32", "float16", "bfloat16", "int8"] = "auto"
    # What runs the model (model/engines.py): "torch"; "onnx", the bundle's exported graph
    # under ONNX Runtime (Whisper bundles, float32 or int8; pip install 'emomon[onnx]');
    # "auto", whichever of the two measured faster on this machine (measured once, cached;
    # torch meanwhile, while the export is made in the background).
    engine: Literal["auto", "torch", "onnx"] = "auto"
    # Segments run through the model together when they queue up: live, replay and serve's
    # worker, batch's model calls (one key for every command).
    max_batch: int = 8

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be 1 or more, not {self.max_batch}")
