"""Audio sources: files read block by block and resampled to 16 kHz mono as they stream.

Memory stays constant for hour-long files: libsndfile reads `block_s` at a time and a
streaming soxr resampler carries its state across blocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...model.audio import SAMPLE_RATE, open_audio
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


def file_blocks(path: str | Path, block_s: float = 0.5, each: bool = False) -> Iterator[np.ndarray]:
    """Yield float32 blocks at SAMPLE_RATE from any file libsndfile reads: mono (channels
    averaged, then resampled), or with `each` one column per channel, shape (n, channels)."""
    import soundfile as sf
    import soxr

    with open_audio(path) as f:
        rate, width = f.samplerate, f.channels if each else 1
        stream = soxr.ResampleStream(rate, SAMPLE_RATE, width, dtype="float32") if rate != SAMPLE_RATE else None
        frames = max(1, int(block_s * rate))
        while True:
            try:
                block = f.read(frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioError(f"Audio file '{path}' is corrupt after {f.tell() / rate:.1f} s ({e}).") from e
            last = len(block) < frames
            if not each:
                block = block.mean(axis=1) if len(block) else np.zeros(0, np.float32)
            if stream is not None:
                block = stream.resample_chunk(block, last=last)
            if len(block):
                yield np.ascontiguousarray(block, dtype=np.float32)
            if last:
                return
