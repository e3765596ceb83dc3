"""Typed settings: frozen dataclasses built from plain dicts (a TOML table or bundle.json).

Every table of config.toml maps one-to-one onto a frozen dataclass that lives beside the
stage it configures (model/specs.py, streamer/audio/segmenter.py, training/settings.py, ...);
config.py (the package root) assembles the whole file. `from_dict` checks
each key and value against the dataclass's type hints, so a misspelt key or a wrong type
fails at start-up with one sentence that names the key, instead of deep inside a thread.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "nothing"
    if tp is float:
        return "a number"
    return {"str": "a string", "int": "an integer", "bool": "true or false"}.get(
        getattr(tp, "__name__", ""), getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) is type(typing.get_args(tp)[0]):
            return value
    elif origin in (Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)[:1]
            return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is Any or isinstance(value, tp):
        return value
    raise ConfigError(f"Setting '{where}' must be {_type_name(tp)}, not {value!r}.")


def from_dict(cls: type[T], data: dict[str, Any] | None, section: str) -> T:
    """Build the frozen dataclass `cls` from `data`, refusing unknown keys and wrong types.

    `section` names where the dict came from (for example ``encoder`` or
    ``bundle.json: regressor``) so that the error sentence points at the right place.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"Unknown setting '{section}.{unknown[0]}' (known keys in [{section}]: {', '.join(sorted(fields))})."
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ checks say what is wrong
        raise ConfigError(f"Section [{section}]: {e}") from e


def to_dict(obj: Any) -> dict[str, Any]:
    """The inverse of `from_dict`: a JSON/TOML-friendly dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing file or a syntax error into one sentence."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"Config file '{path}' does not exist.") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Config file '{path}' is not valid TOML: {e}.") from e
    except OSError as e:
        raise ConfigError(f"Config file '{path}' cannot be read: {e.strerror}.") from e
