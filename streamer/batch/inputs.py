"""What `emomon batch` scores: files, folders (recursive), glob patterns and manifests,
expanded into one `Item` per audio file, largest first.

A folder is walked whole, following links to folders (each real folder once); a file
reached by several paths is scored once, under its real path. A manifest is a CSV or
Parquet file with a `path` column (relative paths are relative to the manifest's folder);
its other columns (a call id, an agent, a date) are carried into every output row of that
file. An INPUT that does not exist, a folder without audio and a
pattern that matches nothing are refused with one sentence before any work starts; a
manifest's file that is missing or unreadable is an error of the run (errors.csv).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model.errors import ConfigError
from ..audio.sources import audio_suffixes

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class Item:
    """One file to score."""

    key: str  # its real path (links resolved): what --resume recognises
    source: str  # the path as given (the rows' `source`, as replay writes it)
    size: int  # bytes (0 when missing): the largest go first
    extra: dict[str, Any] = field(default_factory=dict)  # the manifest's other columns


def expand(inputs: list[str], taken: Collection[str] = ()) -> tuple[list[Item], pa.Schema]:
    """Items for INPUT..., largest first, each file once, and the schema of the manifests'
    columns, none of which may be one of `taken` (the output's own columns: store.py's
    output_columns). Raises ConfigError with one sentence for an input that gives nothing to
    score."""
    import pyarrow as pa

    if not inputs:
        raise ConfigError("Say what to score: audio files, folders, glob patterns or a manifest (CSV or Parquet).")
    suffixes = audio_suffixes()
    items: dict[str, Item] = {}
    schemas: list[tuple[str, pa.Schema]] = []

    def add(path: str, extra: dict[str, Any] | None = None) -> None:
        key = os.path.realpath(path)  # a file reached by two paths (a link, a manifest and a folder) is one
        if key not in items:
            try:
                size = os.stat(key).st_size
            except OSError:
                size = 0
            items[key] = Item(key, path, size, extra or {})

    for arg in inputs:
        p = Path(arg)
        if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            rows, schema = read_manifest(p, set(taken))
            schemas.append((arg, schema))
            for path, extra in rows:
                add(path, extra)
        elif p.is_file():
            add(arg)
        elif p.is_dir():
            found = sorted(f for f in walk(arg) if os.path.splitext(f)[1].lower() in suffixes and os.path.isfile(f))
            if not found:
                looked = ", ".join(sorted(suffixes)[:6])
                raise ConfigError(f"Input folder '{arg}' holds no audio files (looked for {looked}, ...).")
            for f in found:
                add(f)
        elif glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg, recursive=True) if os.path.isfile(f))
            if not found:
                raise ConfigError(f"Input pattern '{arg}' matches no file.")
            for f in found:
                add(f)
        else:
            raise ConfigError(f"Input '{arg}' does not exist.")
    schema = pa.schema([])
    for arg, s in schemas:
        if len(schema) and not s.equals(schema):
            raise ConfigError(
                f"Manifest '{arg}' has other columns ({', '.join(s.names)}) "
                f"than the first one ({', '.join(schema.names)})."
            )
        schema = s
    return sorted(items.values(), key=lambda it: (-it.size, it.key)), schema


def walk(folder: str) -> Iterator[str]:
    """Every file under `folder`, following links to folders, each real folder once (a link
    back up the tree ends there)."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for name in names:
            yield os.path.join(root, name)


def read_manifest(path: Path, taken: set[str]) -> tuple[list[tuple[str, dict[str, Any]]], pa.Schema]:
    """(path, other columns) per row of a CSV or Parquet manifest, and those columns' schema."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pcsv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ConfigError(f"Manifest '{path}' cannot be read: {str(e).splitlines()[0]}.") from e
    if "path" not in table.column_names:
        raise ConfigError(f"Manifest '{path}' has no 'path' column (its columns: {', '.join(table.column_names)}).")
    clash = [c for c in table.column_names if c != "path" and c in taken]
    if clash:
        raise ConfigError(f"Manifest '{path}' has a column '{clash[0]}' that the output has too; rename it.")
    folder = path.parent
    paths = table.column("path").to_pylist()
    others = table.drop_columns(["path"])
    extras = others.to_pylist()
    rows = []
    for i, (p, extra) in enumerate(zip(paths, extras)):
        if not isinstance(p, str) or not p:
            raise ConfigError(f"Manifest '{path}', row {i + 2}: the path is empty.")
        rows.append((p if os.path.isabs(p) else str(folder / p), extra))
    return rows, others.schema.remove_metadata()
