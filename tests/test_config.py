"""config.toml maps onto frozen dataclasses; unknown keys and wrong types fail with one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from support.data import REPO

from emomon.config import TABLES, Config, load_config
from emomon.model.errors import ConfigError
from emomon.model.settings import from_dict, to_dict
from emomon.model.specs import EncoderSpec, RegressorSpec


def test_shipped_config_matches_the_defaults() -> None:
    assert load_config(REPO / "config.toml") == Config()


def test_defaults_describe_the_shipped_model() -> None:
    """The [train.encoder] and [train.regressor] defaults are model/default's (they described HuBERT-Large
    arch 2 before, while the shipped model is Whisper base arch 3); `.paper()` is the paper's."""
    shipped = json.loads((REPO / "model" / "default" / "bundle.json").read_text())
    assert from_dict(EncoderSpec, shipped["encoder"], "encoder") == EncoderSpec() == Config().encoder
    assert from_dict(RegressorSpec, shipped["regressor"], "regressor") == RegressorSpec() == Config().regressor
    paper = RegressorSpec.paper()
    assert (paper.arch, paper.head, paper.ff, paper.output_activation, paper.ensemble) == (
        2, "per_emotion", (256, 128, 64), "relu", 1,
    )  # fmt: skip
    assert EncoderSpec.paper() == EncoderSpec(kind="ssl", name="facebook/hubert-large-ll60k", layer="last")
    assert EncoderSpec(kind="egemaps").layer == "last"  # the default layer is for encoders with layers


def test_docs_config_is_generated_from_config_toml_and_covers_every_setting() -> None:
    """docs/config.md is config.toml's reference, generated (python -m emomon.config):
    it must be what the generator gives today, and name every field of every table's
    dataclass with a meaning."""
    from emomon.config import reference

    text = reference((REPO / "config.toml").read_text())
    assert (REPO / "docs" / "config.md").read_text() == text, "regenerate: python -m emomon.config"
    documented: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("## `["):
            table = line.removeprefix("## `[").removesuffix("]`")
        elif line.startswith("| `"):
            key, default, meaning = (c.strip() for c in line.strip("|").split(" | ", 2))
            assert meaning, f"[{table}] {key} says nothing of what it means"
            documented.setdefault(table, set()).add(key.strip("`"))
    tables = {TABLES[t.name]: {f.name for f in fields(getattr(Config(), t.name))} for t in fields(Config)}
    assert documented == tables


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,message",
    [
        ("[train.encoder]\nlayre = 3\n", "Unknown setting 'train.encoder.layre'"),
        ("[train.encoder]\nlayer = -1\n", "layer must be 'last', 'weighted' or an index >= 0"),
        ("[train.encoder]\nlayer = 'first'\n", "'train.encoder.layer' must be 'last' or 'weighted' or an integer"),
        ("[train.regressor]\narch = 4\n", "'train.regressor.arch' must be 1 or 2 or 3, not 4"),
        ("[train.regressor]\nconv_channels = [64, 'x']\n", "'train.regressor.conv_channels[1]' must be an integer"),
        ("[train.regressor]\nlstm_hidden = 1.5\n", "'train.regressor.lstm_hidden' must be an integer"),
        ("[runtime]\ndtype = 'float64'\n", "'runtime.dtype' must be 'auto' or 'float32' or 'float16' or 'bfloat16' or"),
        ("[runtim]\n", "unknown table [runtim]"),
        ("runtime = 3\n", "'runtime' must be a table"),
        ("[encoder\n", "is not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "c.toml") in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_partial_tables_keep_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[train.encoder]\nlayer = 5\n[train.regressor]\nconv_channels = [64, 32]\n"))
    assert cfg.encoder == EncoderSpec(layer=5)
    assert cfg.regressor.conv_channels == (64, 32) and cfg.regressor.lstm_hidden == 512


def test_the_old_training_tables_are_refused_with_their_new_names(tmp_path: Path) -> None:
    for old, new in (("encoder", "train.encoder"), ("regressor", "train.regressor")):
        with pytest.raises(ConfigError, match=rf"table \[{old}\] is now \[{new}\] \(the encoder and head"):
            load_config(write(tmp_path, f"[{old}]\nlayer = 3\n"))


def test_a_key_said_twice_before_is_refused_with_the_one_that_says_it_now(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[batch\] model is now \[model\] bundle"):
        load_config(write(tmp_path, '[batch]\nmodel = "models/x"\n'))
    for table in ("monitor", "serve", "batch"):
        with pytest.raises(ConfigError, match=rf"\[{table}\] max_batch is now \[runtime\] max_batch, one key"):
            load_config(write(tmp_path, f"[{table}]\nmax_batch = 4\n"))
    assert load_config(write(tmp_path, "[runtime]\nmax_batch = 4\n")).runtime.max_batch == 4
    with pytest.raises(ConfigError, match=r"\[monitor\] csv is now \[outputs\] csv, one key for every command"):
        load_config(write(tmp_path, '[monitor]\ncsv = "x.csv"\n'))
    cfg = load_config(write(tmp_path, '[outputs]\ncsv = "x.csv"\ninterim_s = 0.0\n'))
    assert cfg.outputs.csv == "x.csv" and cfg.outputs.interim_s == 0.0 and cfg.monitor.speed == 1.0


def test_a_nested_table_leaves_its_parent(tmp_path: Path) -> None:
    """[train.encoder] is the encoder's table, not a key of [train]; [train] keeps its own keys."""
    cfg = load_config(write(tmp_path, "[train]\nepochs = 7\n[train.encoder]\nlayer = 2\n"))
    assert cfg.train.epochs == 7 and cfg.encoder.layer == 2 and cfg.regressor == RegressorSpec()


def test_to_dict_inverts_from_dict() -> None:
    spec = RegressorSpec(arch=1, ff_dims=(32, 8))
    assert from_dict(RegressorSpec, to_dict(spec), "regressor") == spec
    assert to_dict(spec)["ff_dims"] == [32, 8]


def test_booleans_are_not_integers() -> None:
    with pytest.raises(ConfigError, match="'regressor.kernel_size' must be an integer, not True"):
        from_dict(RegressorSpec, {"kernel_size": True}, "regressor")


@pytest.mark.system
def test_reading_config_does_not_import_torch() -> None:
    code = (
        "import sys; from emomon.config import load_config; load_config('config.toml'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("recipe", sorted((REPO / "training" / "experiments").glob("*.toml")), ids=lambda p: p.stem)
def test_every_experiment_recipe_loads(recipe: Path) -> None:
    """Each recipe is a valid config; the paper's name every regressor setting they rely on."""
    cfg = load_config(recipe)
    if recipe.stem.startswith("compare23"):
        assert cfg.regressor == RegressorSpec.paper(arch=cfg.regressor.arch, pooling=cfg.regressor.pooling)
        assert cfg.encoder.kind == "ssl" and cfg.encoder.layer == "last"
