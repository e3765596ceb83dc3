"""config.toml: the one loader that assembles every table.

Each table's dataclass lives beside the stage it configures; this module only gathers
them. Nothing here imports torch, so a bad setting is reported before any model loads.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from ..model.errors import ConfigError
from ..model.settings import from_dict, read_toml
from ..model.specs import EncoderSpec, ModelSettings, RegressorSpec, RuntimeSettings
from ..model.tracker import SpeakerSettings
from ..training.settings import AugmentSettings, DatasetSettings, EvaluationSettings, TrainSettings
from .audio.segmenter import VadSettings
from .batch.settings import BatchSettings
from .monitor.settings import MonitorSettings
from .serve.settings import ServeSettings


@dataclass(frozen=True)
class Config:
    """The whole of config.toml: one frozen dataclass per table."""

    encoder: EncoderSpec = EncoderSpec()
    regressor: RegressorSpec = RegressorSpec()
    runtime: RuntimeSettings = RuntimeSettings()
    train: TrainSettings = TrainSettings()
    dataset: DatasetSettings = DatasetSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    augment: AugmentSettings = AugmentSettings()
    model: ModelSettings = ModelSettings()
    vad: VadSettings = VadSettings()
    monitor: MonitorSettings = MonitorSettings()
    serve: ServeSettings = ServeSettings()
    batch: BatchSettings = BatchSettings()
    speakers: SpeakerSettings = SpeakerSettings()


def load_config(path: str | Path | None = None) -> Config:
    """Read config.toml (or the file at `path`); missing tables and keys keep their defaults."""
    data = read_toml(path) if path is not None else {}
    hints = typing.get_type_hints(Config)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"Config file '{path}' has an unknown table [{unknown[0]}] (known: {', '.join(hints)}).")
    sections = {}
    for name, cls in hints.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"Config file '{path}': '{name}' must be a table ([{name}]).")
        try:
            sections[name] = from_dict(cls, table, name)
        except ConfigError as e:
            raise ConfigError(f"Config file '{path}': {e}") from e
    return Config(**sections)
