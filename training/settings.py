"""The training tables of config.toml: [train], [dataset], [evaluation] and [augment].

Plain frozen dataclasses with no heavy import (config.py reads them with the rest
of the file before torch loads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..model.errors import EmomonError
from .datasets import DATASET_KINDS
from .protocols import Protocol


@dataclass(frozen=True)
class TrainSettings:
    """The training recipe ([train] table): the paper's defaults."""

    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 20  # epochs without a better devel mean Spearman before stopping; 0 = never early
    seed: int = 0
    normalization: Literal["global", "speaker", "corpus"] = "global"  # see model/normalize.py
    prior_frames: int = 3000  # "speaker" mode: frames the training statistics weigh at a session's start
    # "speaker" mode: the session's own statistics never weigh more than this many frames, so
    # the prior keeps prior/(prior+cap) of the weight and a long one-emotion session does not
    # become its own "neutral"; 0 = no cap.
    session_frames: int = 0
    loss: Literal["mse", "ce"] = "mse"  # MSE on shares (the paper) or cross-entropy with soft targets
    # each file's weight in the loss: "none" (the paper: every file the same), "corpus" (every
    # corpus the same in all), "speaker" (every corpus the same, within it every speaker)
    balance: Literal["none", "corpus", "speaker"] = "none"
    cache_dir: str = ""  # embedding cache; "" = $XDG_CACHE_HOME/emomon/embeddings (~/.cache/...)
    out: str = ""  # bundle folder to write; "" = models/<dataset>-<encoder>-arch<N>
    # Adapting the encoder (training/adapt.py): "none" trains the head on frozen features;
    # "lora" trains low-rank adapters on the attention and feed-forward projections of the
    # layers `adapt_layers` names, "layers" those layers' own weights; both start from the
    # head the frozen recipe trains, on the same fold, and train it further beside them.
    adapt: Literal["none", "lora", "layers"] = "none"
    adapt_layers: tuple[int, ...] = ()  # encoder layers that train, 1 = the first; () = all the model reads
    lora_rank: int = 16
    lora_alpha: float = 32.0  # the update is scaled by alpha / rank
    adapt_epochs: int = 4  # epochs with the encoder in the loop, after the frozen fit
    adapt_batch_size: int = 32
    encoder_lr: float = 5e-4  # the encoder's top trained layer's learning rate (LoRA matrices or weights)
    head_lr: float = 1e-4  # the head's learning rate while the encoder adapts
    layer_decay: float = 1.0  # each trained layer below the top learns layer_decay times as fast as the one above
    # SpecAugment-like masking of the trained layers' input while adapting: spans of
    # `mask_span` frames covering about `mask_time` of each clip, and `mask_channels` of
    # its channels, replaced by the clip's mean (0 = off)
    mask_time: float = 0.0
    mask_span: int = 10
    mask_channels: float = 0.0
    checkpoint_dir: str = ""  # adapted fits' epoch checkpoints; "" = <out>.checkpoints

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0 and patience >= 0")
        if self.session_frames < 0 or self.prior_frames < 0:
            raise ValueError("prior_frames and session_frames must be >= 0")
        if self.adapt not in ("none", "lora", "layers"):
            raise ValueError(f"adapt must be none, lora or layers, not '{self.adapt}'")
        if any(i < 1 for i in self.adapt_layers) or self.adapt_epochs < 1 or self.adapt_batch_size < 1:
            raise ValueError("adapt_layers count from 1; adapt_epochs and adapt_batch_size must be >= 1")
        if self.encoder_lr <= 0 or self.head_lr < 0 or not 0 < self.layer_decay <= 1:
            raise ValueError("encoder_lr must be > 0, head_lr >= 0 and layer_decay in (0, 1]")
        if not (0 <= self.mask_time < 1 and 0 <= self.mask_channels < 1) or self.mask_span < 1:
            raise ValueError("mask_time and mask_channels must be in [0, 1) and mask_span >= 1")


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
    # subsets left out of training and evaluation, "CORPUS.SUBSET" (a value of the corpus's
    # subset column): ["ased.emotion_specific"] drops the sentences whose words give the emotion away
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for k in self.kinds:
            if k not in DATASET_KINDS:
                raise ValueError(f"dataset kind '{k}' is not one of {', '.join(DATASET_KINDS)}")
        for x in self.exclude:
            if not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", x):
                raise ValueError(f"exclude '{x}' is not CORPUS.SUBSET")
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
      "A+B:kfoldK"     each listed corpus's own K folds, all in K fits (scored as A_kfoldK, B_kfoldK);
      "A>B"            trained on corpus A only, tested on corpus B over the emotions both label;
      "A+B>C"          leave-one-corpus-out: trained on A and B, tested on C.
    Each is saved in the bundle's metrics as "CORPUS_loso", "A_to_B", "A_B_to_C", ... `perturbations`
    scores every fold's test files again through a microphone-like change ("white:20",
    "pink:20" = noise at that SNR in dB, "gain:-12", "telephone") with the same models.
    """

    protocols: tuple[str, ...] = ()  # () = each corpus by its split when it has one, else loso
    perturbations: tuple[str, ...] = ()
    probe: bool = False  # also fit the linear probe on every fold (training/probe.py): metrics "probe"

    def __post_init__(self) -> None:
        for p in self.protocols:
            try:
                Protocol.parse(p)
            except EmomonError as e:
                raise ValueError(str(e)[0].lower() + str(e)[1:].rstrip(".")) from None
        for p in self.perturbations:
            if not re.fullmatch(r"(white|pink):-?\d+(\.\d+)?|gain:[-+]?\d+(\.\d+)?|telephone", p):
                raise ValueError(f"perturbation '{p}' is not white:SNR, pink:SNR, gain:DB or telephone")


@dataclass(frozen=True)
class AugmentSettings:
    """[augment]: microphone-like changes to training audio, drawn per file and view, seeded.

    Each training file gets `views` changed copies besides the clean one; every epoch
    draws one of them per file. Each copy gets a random gain in +-`gain_db`, and with the
    given probabilities white or pink noise at an SNR in `snr_db`, a telephone band
    (8 kHz resampling, 300-3400 Hz), a small room's reverberation, a round trip through
    the Opus speech codec (as VoIP and phone apps pass speech), and a cut to a random
    `crop_s` excerpt (short utterances).
    """

    views: int = 0  # 0 = no augmentation
    gain_db: float = 12.0
    noise: float = 0.5  # probability of added noise
    snr_db: tuple[float, ...] = (10.0, 30.0)
    telephone: float = 0.2
    reverb: float = 0.2
    codec: float = 0.0  # probability of an Opus round trip
    crop: float = 0.0  # probability of keeping only a random excerpt ...
    crop_s: tuple[float, ...] = (1.0, 2.5)  # ... of this many seconds

    def __post_init__(self) -> None:
        if self.views < 0 or self.gain_db < 0:
            raise ValueError("views and gain_db must be >= 0")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be [low, high], not {list(self.snr_db)}")
        if len(self.crop_s) != 2 or not 0.3 <= self.crop_s[0] <= self.crop_s[1]:
            raise ValueError(f"crop_s must be [low, high] seconds, low >= 0.3, not {list(self.crop_s)}")
        if not all(0.0 <= p <= 1.0 for p in (self.noise, self.telephone, self.reverb, self.codec, self.crop)):
            raise ValueError("noise, telephone, reverb, codec and crop are probabilities in [0, 1]")
