"""Embedding cache: each file's encoder features extracted once, stored unpadded.

    <root>/<encoder slug>/
      index.json              encoder id, revision, dim; content hash -> shard file
      shard-00000.safetensors one tensor per file, named by its content hash: (T, D) or
      shard-00001.safetensors (K, T, D) for layer="weighted"; float16 for SSL encoders,
                              float32 for openSMILE descriptors (they pass float16's range)

Keys are (audio content hash, encoder id + revision + layer, variant): renaming or moving a
file keeps its entry, changing its audio or the encoder does not. A variant names what was
done to the audio before encoding (cut to its speech, a seeded augmentation, a robustness
perturbation); the caller passes the function that does it and a name that identifies it. Sequences are stored at their
true length, so a corpus costs what its frames cost (the full ComParE set at 1024-d fp16
is ~25 GB instead of 100+ GB as one padded array). Extraction is resumable: the index is
rewritten atomically after every shard, so an interrupted run loses at most one shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..model.audio import MIN_SEGMENT_SAMPLES, SAMPLE_RATE, read_audio
from ..model.bundle import file_sha256
from ..model.errors import AudioError
from ..model.specs import LAYERED

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from ..model.compute import Encoder

log = logging.getLogger("emomon")
INDEX = "index.json"


class EmbeddingCache:
    def __init__(self, root: str | Path, encoder: Encoder, shard_items: int = 512, store_dtype: str | None = None):
        import torch

        # SSL and Whisper embeddings fit float16; openSMILE descriptors do not
        # (spectral variances and energies pass 65504, float16's largest value).
        store_dtype = store_dtype or ("float16" if encoder.spec.kind in LAYERED else "float32")
        self.encoder = encoder
        revision = getattr(encoder, "revision", encoder.spec.revision)
        digest = getattr(encoder, "digest", "")  # other weights under the same name: another cache
        self.key = f"{encoder.spec.encoder_id}#{revision}#{store_dtype}" + (f"#{digest[:16]}" if digest else "")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.spec.encoder_id.split(":", 1)[-1])[-60:]
        self.folder = Path(root) / f"{slug}-{hashlib.sha256(self.key.encode()).hexdigest()[:12]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard_items = shard_items
        self.store_dtype = getattr(torch, store_dtype)
        self.entries: dict[str, str] = self._read_index()
        self._hashes: dict[Path, str] = {}

    def _read_index(self) -> dict[str, str]:
        path = self.folder / INDEX
        if not path.exists():
            return {}
        try:
            index = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("embedding cache index %s is unreadable; starting it again", path)
            return {}
        if index.get("key") != self.key:
            return {}
        return {h: s for h, s in index.get("entries", {}).items() if (self.folder / s).is_file()}

    def _write_index(self) -> None:
        index = {"key": self.key, "dim": self.encoder.dim, "entries": self.entries}
        tmp = self.folder / (INDEX + ".tmp")
        tmp.write_text(json.dumps(index))
        tmp.replace(self.folder / INDEX)

    def hash_of(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = file_sha256(path)
        return self._hashes[path]

    def entry(self, path: Path, variant: str = "") -> str:
        """The index key of `path` (its content hash) in `variant`."""
        return f"{self.hash_of(path)}/{variant}" if variant else self.hash_of(path)

    def extract(
        self,
        paths: Sequence[Path],
        batch_seconds: float = 60.0,
        console: Console | None = None,
        variant: str = "",
        transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
    ) -> list[tuple[str, str]]:
        """Make sure every readable file in `paths` is cached; returns (file, reason) problems.

        With a `variant`, what is cached is `transform(i, audio)` of paths[i] instead.
        """
        import torch
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        problems: list[tuple[str, str]] = []
        todo: dict[str, tuple[int, Path]] = {}
        for i, p in enumerate(paths):
            try:
                h = self.entry(p, variant)
            except OSError as e:
                problems.append((str(p), f"cannot be read ({e.strerror})"))
                continue
            if h not in self.entries:
                todo.setdefault(h, (i, p))
        if not todo:
            return problems
        pending: dict[str, torch.Tensor] = {}
        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
            TimeRemainingColumn(),
        )  # fmt: skip
        name = Path(self.encoder.spec.name.rstrip("/")).name
        what = f" ({variant.split('/')[0]})" if variant else ""
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(f"embedding with {name}{what}", total=len(todo))
            for batch in _batches(list(todo.items()), batch_seconds):
                keys, audio = [], []
                batch_paths = {h: p for h, (_, p) in batch}
                for h, (i, p) in batch:
                    try:
                        a = read_audio(p)
                    except AudioError as e:
                        problems.append((str(p), str(e)))
                        continue
                    if transform is not None:
                        a = transform(i, a)
                    if len(a) < MIN_SEGMENT_SAMPLES:
                        problems.append((str(p), f"shorter than {MIN_SEGMENT_SAMPLES / SAMPLE_RATE} s"))
                        continue
                    keys.append(h)
                    audio.append(a)
                if audio:
                    emb = self.encoder.encode(audio)
                    for i, h in enumerate(keys):
                        stored = emb.segment(i).to(self.store_dtype).cpu().contiguous()
                        if not torch.isfinite(stored).all():
                            problems.append((str(batch_paths[h]), f"its features are not finite in {self.store_dtype}"))
                            continue
                        pending[h] = stored
                if len(pending) >= self.shard_items:
                    self._flush(pending)
                bar.advance(task, len(batch))
            self._flush(pending)
        return problems

    def _flush(self, pending: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        if not pending:
            return
        n = len(list(self.folder.glob("shard-*.safetensors")))
        while (self.folder / f"shard-{n:05d}.safetensors").exists():
            n += 1
        name = f"shard-{n:05d}.safetensors"
        save_file(pending, self.folder / name)
        self.entries.update(dict.fromkeys(pending, name))
        self._write_index()
        pending.clear()

    def load(self, paths: Sequence[Path], variant: str = "", stored: bool = False) -> list[torch.Tensor | None]:
        """Cached features per path as float32 ((T, D) or (K, T, D)), or in the dtype they
        are stored in (`stored`, half the memory for SSL features); None where absent."""
        from safetensors import safe_open

        want: dict[str, list[str]] = {}
        keys = []
        for p in paths:
            h = self.entry(p, variant) if p.is_file() else None  # hashed once per run
            keys.append(h if h in self.entries else None)
            if keys[-1]:
                want.setdefault(self.entries[h], []).append(h)
        got = {}
        for shard, hs in want.items():
            with safe_open(self.folder / shard, framework="pt") as f:
                for h in hs:
                    got[h] = f.get_tensor(h) if stored else f.get_tensor(h).float()
        return [got[k] if k else None for k in keys]


def _batches(items: list[tuple[str, tuple[int, Path]]], seconds: float) -> Iterator[list]:
    """Chunks of files whose audio adds up to about `seconds` (sizes from the file headers)."""
    import soundfile as sf

    batch, total = [], 0.0
    for h, (i, p) in items:
        try:
            d = sf.info(p).duration
        except (sf.LibsndfileError, RuntimeError):
            d = 0.0  # read_audio will report it
        if batch and total + d > seconds:
            yield batch
            batch, total = [], 0.0
        batch.append((h, (i, p)))
        total += d
    if batch:
        yield batch
