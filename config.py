"""config.toml: the one loader that assembles every table.

Each table's dataclass lives beside the stage it configures; this module only gathers
them. Nothing here imports torch, so a bad setting is reported before any model loads.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from .model.errors import ConfigError
from .model.settings import from_dict, read_toml
from .model.specs import EncoderSpec, ModelSettings, RegressorSpec, RuntimeSettings
from .model.tracker import SpeakerSettings
from .streamer.audio.segmenter import VadSettings
from .streamer.audio.sources import InputSettings
from .streamer.batch.settings import BatchSettings
from .streamer.monitor.settings import MonitorSettings
from .streamer.outputs.settings import OutputSettings
from .streamer.serve.settings import ServeSettings
from .training.settings import AugmentSettings, DatasetSettings, EvaluationSettings, TrainSettings


@dataclass(frozen=True)
class Config:
    """The whole of config.toml: one frozen dataclass per table (TABLES: where each is)."""

    encoder: EncoderSpec = EncoderSpec()  # [train.encoder]: what `emomon train` trains on
    regressor: RegressorSpec = RegressorSpec()  # [train.regressor]: the head it trains
    runtime: RuntimeSettings = RuntimeSettings()
    train: TrainSettings = TrainSettings()
    dataset: DatasetSettings = DatasetSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    augment: AugmentSettings = AugmentSettings()
    model: ModelSettings = ModelSettings()
    input: InputSettings = InputSettings()
    vad: VadSettings = VadSettings()
    outputs: OutputSettings = OutputSettings()
    monitor: MonitorSettings = MonitorSettings()
    serve: ServeSettings = ServeSettings()
    batch: BatchSettings = BatchSettings()
    speakers: SpeakerSettings = SpeakerSettings()


# Config's fields whose table sits inside another: training's encoder and head are
# training's (a bundle carries its own; every command runs [model]).
NESTED = {"encoder": ("train", "encoder"), "regressor": ("train", "regressor")}
TABLES = {name: ".".join(NESTED.get(name, (name,))) for name in Config.__dataclass_fields__}  # field -> table
MOVED = {name: TABLES[name] for name in NESTED}  # once top-level tables ([encoder]) -> their table now
MOVED_KEYS = (
    {("batch", "model"): "[model] bundle"}
    | {(table, "max_batch"): "[runtime] max_batch" for table in ("monitor", "serve", "batch")}
    | {("monitor", key): f"[outputs] {key}" for key in OutputSettings.__dataclass_fields__}
)  # old keys -> the one that says it now


def load_config(path: str | Path | None = None) -> Config:
    """Read config.toml (or the file at `path`); missing tables and keys keep their defaults."""
    data = read_toml(path) if path is not None else {}
    moved = sorted(set(data) & set(MOVED))
    if moved:
        raise ConfigError(
            f"Config file '{path}': table [{moved[0]}] is now [{MOVED[moved[0]]}] (the encoder and head training "
            "uses; what the commands run is [model])."
        )
    for (table, key), now in MOVED_KEYS.items():
        if isinstance(data.get(table), dict) and key in data[table]:
            raise ConfigError(f"Config file '{path}': [{table}] {key} is now {now}, one key for every command.")
    hints = typing.get_type_hints(Config)
    top = [n for n in hints if n not in NESTED]
    unknown = sorted(set(data) - set(top))
    if unknown:
        raise ConfigError(f"Config file '{path}' has an unknown table [{unknown[0]}] (known: {', '.join(top)}).")
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    sections = {}
    for name in [*NESTED, *top]:  # a nested table leaves its parent before the parent is read
        where = NESTED.get(name, (name,))
        parent = data if len(where) == 1 else data.get(where[0], {})
        table = parent.pop(where[-1], {}) if isinstance(parent, dict) else {}
        if not isinstance(table, dict):
            raise ConfigError(f"Config file '{path}': '{TABLES[name]}' must be a table ([{TABLES[name]}]).")
        try:
            sections[name] = from_dict(hints[name], table, TABLES[name])
        except ConfigError as e:
            raise ConfigError(f"Config file '{path}': {e}") from e
    return Config(**sections)


def reference(toml_text: str) -> str:
    """docs/config.md: every table and key of config.toml, its default and what it means,
    read from the file's own comments (config.toml is the one place the meanings are
    written; tests/test_config.py holds the two equal and every dataclass field present).

        python -m emomon.config > docs/config.md
    """
    out = [
        "# Configuration (`config.toml`)",
        "",
        "Generated from config.toml by `python -m emomon.config > docs/config.md`;",
        "the tests fail when the two differ. Each table maps onto a frozen dataclass; an unknown",
        "key or a value of the wrong type stops emomon at start-up with a sentence that names it.",
        "Missing tables and keys keep the defaults below. `emomon --config FILE` reads another file.",
    ]
    key: list[str] | None = None  # [name, value, meaning] of the key being read
    intro: list[str] = []
    tables = 0

    def flush_key() -> None:
        nonlocal key
        if key is not None:
            meaning = key[2].replace("|", "\\|")
            out.append(f"| `{key[0]}` | `{key[1]}` | {meaning} |")
            key = None

    for raw in toml_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            flush_key()
            out += ["", f"## `{line}`", ""]
            intro, tables = [], tables + 1
            continue
        if not tables or not line:  # the file's own header, blank lines
            flush_key()
            continue
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            if key is not None and raw.startswith(" "):  # a key's comment goes on
                key[2] = f"{key[2]} {text}".strip()
            else:
                flush_key()
                intro.append(text)
            continue
        flush_key()
        if intro:
            out += [" ".join(intro), ""]
            intro = []
        if out[-1] == "" and not out[-2].startswith("|"):
            out += ["| key | default | meaning |", "|---|---|---|"]
        name, _, rest = line.partition("=")
        value, _, comment = rest.partition(" #")
        key = [name.strip(), value.strip(), comment.strip()]
    flush_key()
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference((Path(__file__).resolve().parent / "config.toml").read_text()))
