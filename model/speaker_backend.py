"""A speaker back-end: what GE2E embeddings go through before the tracker compares them.

GE2E embeddings (model/speaker.py) move with a speaker's emotion: the same actor angry and
calm can lie further apart than two actors. A back-end learned from many voices, each
heard in several emotions, takes out what varies within a speaker:

1. centring: minus the mean embedding of the voices it was fitted on;
2. nuisance attribute projection (NAP): the `k` directions along which a speaker's own
   embeddings scatter most (emotion, mostly) projected out;
3. length normalisation, so that a dot product is a cosine again.

It is fitted by `python -m emomon.training.speaker_backend` (training/speaker_backend.py)
and ships as a small bundle folder, like the emotion model's: `speaker.json` (format,
method, what it was fitted on, the tracker thresholds tuned with it, the weights' SHA-256)
and `backend.safetensors` (`mean` (256,), `keep` (256, 256)). The digest is checked before
the weights are parsed. How much it helps, and on which voices: docs/benchmarks.md,
"Speakers".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import read_verified
from .errors import BundleError

FORMAT = "emomon-speaker-backend"
FORMAT_VERSION = 1
MANIFEST = "speaker.json"
WEIGHTS = "backend.safetensors"
DEFAULT_FOLDER = Path(__file__).resolve().parent / "speaker_backend"


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class SpeakerBackend:
    """Centring, a projection and length normalisation of GE2E embeddings."""

    mean: np.ndarray  # (D,) float64
    keep: np.ndarray  # (D, D) float64: the projection
    info: dict[str, Any] = field(default_factory=dict)  # speaker.json's "method", "fitted_on", "tracker"

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) float32 embeddings as the tracker compares them."""
        x = unit_rows(np.asarray(embeddings, np.float64))
        return unit_rows((x - self.mean) @ self.keep).astype(np.float32)


def within_directions(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Eigenvectors of the within-speaker scatter of the rows of x, largest first."""
    z = np.concatenate([x[speakers == s] - x[speakers == s].mean(0) for s in np.unique(speakers)])
    _, v = np.linalg.eigh(z.T @ z / len(z))
    return v[:, ::-1]


def fit_nap(embeddings: np.ndarray, speakers: np.ndarray, k: int, info: dict | None = None) -> SpeakerBackend:
    """Centring on the mean of `embeddings`, then the top `k` within-speaker directions out."""
    x = unit_rows(np.asarray(embeddings, np.float64))
    mean = x.mean(0)
    v = within_directions(x - mean, np.asarray(speakers))[:, :k]
    keep = np.eye(x.shape[1]) - v @ v.T
    return SpeakerBackend(mean, keep, {"method": {"name": "centring + NAP", "k": k}, **(info or {})})


def save_backend(backend: SpeakerBackend, folder: str | Path) -> Path:
    """The bundle folder: backend.safetensors, then speaker.json with its digest."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"mean": backend.mean.astype(np.float64), "keep": backend.keep.astype(np.float64)}, folder / WEIGHTS)
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **backend.info,
                "weights": {"file": WEIGHTS, "sha256": digest}}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def load_backend(folder: str | Path) -> SpeakerBackend:
    """A bundle folder written by save_backend; one sentence for anything missing or wrong."""
    folder = Path(folder)
    where = folder / MANIFEST
    try:
        manifest = json.loads(where.read_text())
    except FileNotFoundError:
        raise BundleError(f"Speaker back-end folder '{folder}' has no {MANIFEST}.") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{where} cannot be read as JSON: {e}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{where} is not a speaker back-end (format must be '{FORMAT}').")
    if manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version")
        raise BundleError(f"{where} has format_version {found!r}; this emomon reads {FORMAT_VERSION}.")
    weights = manifest.get("weights")
    digest = weights.get("sha256") if isinstance(weights, dict) else None
    if not isinstance(digest, str):
        raise BundleError(f"{where} has no weights.sha256: emomon checks the weights before it reads them.")
    path = folder / WEIGHTS
    data = read_verified(path, digest, "Speaker back-end weights", MANIFEST)
    from safetensors.numpy import load

    try:
        tensors = load(data)
        mean, keep = tensors["mean"], tensors["keep"]
    except Exception as e:  # noqa: BLE001 - the digest matched, so this is a file written wrong
        raise BundleError(f"Speaker back-end weights {path} are not a back-end's tensors: {e}.") from None
    if mean.ndim != 1 or keep.shape != (len(mean), len(mean)):
        raise BundleError(f"Speaker back-end weights {path}: mean {mean.shape} and keep {keep.shape} do not fit.")
    info = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "weights")}
    return SpeakerBackend(mean.astype(np.float64), keep.astype(np.float64), info)


def resolve_backend(setting: str) -> SpeakerBackend | None:
    """[speakers] backend: "default" (the one emomon ships), "none" (raw embeddings) or a folder."""
    if setting == "none":
        return None
    return load_backend(DEFAULT_FOLDER if setting == "default" else Path(setting).expanduser())
