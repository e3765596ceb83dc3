"""Audio sources: files read block by block at their own rate, as a sound card gives blocks.

Memory stays constant for hour-long files: libsndfile reads `block_s` at a time. The
stream they feed (stream.py: AudioStream) resamples, as it does a microphone's blocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...model.audio import open_audio
from ...model.errors import AudioError


def audio_files(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (a folder's audio files, sorted) into files to replay.

    Returns (files, problems): a path that does not exist, or a folder's file that
    libsndfile does not read, is a problem (file, reason); the rest goes on.
    """
    import soundfile as sf

    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(x for x in p.iterdir() if x.is_file()):
                try:
                    sf.info(os.fsencode(f))  # bytes: a name that is not UTF-8 is read too
                    files.append(f)
                except (sf.LibsndfileError, RuntimeError, TypeError):
                    problems.append((str(f), "not an audio file libsndfile reads"))
        elif p.exists():
            files.append(p)
        else:
            problems.append((str(p), "does not exist"))
    return files, problems


class FileSource:
    """A file libsndfile reads, as a stream: `rate` (the file's) and `blocks()`, float32 at
    that rate, mono (channels averaged) or with `each` one column per channel, shape
    (n, channels). Opening it says in one sentence when the file cannot be read."""

    def __init__(self, path: str | Path, block_s: float = 0.5, each: bool = False) -> None:
        self.path, self.block_s, self.each = path, block_s, each
        with open_audio(path) as f:
            self.rate, self.channels = f.samplerate, f.channels

    def blocks(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        with open_audio(self.path) as f:
            frames = max(1, int(self.block_s * f.samplerate))
            while True:
                try:
                    block = f.read(frames, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as e:
                    at = f.tell() / f.samplerate
                    raise AudioError(f"Audio file '{self.path}' is corrupt after {at:.1f} s ({e}).") from e
                if len(block):
                    yield np.ascontiguousarray(block if self.each else block.mean(axis=1), dtype=np.float32)
                if len(block) < frames:
                    return
