"""`--save-audio DIR`: each scored segment as a 16 kHz FLAC named after its log id, so a
reviewer can listen to exactly what the model scored.

Saving never stops the monitor: a folder that cannot be made or written, or a full disk,
is said once in one sentence (again only if the reason changes), counted, and the
segments go on being scored and logged. Each file is written under a temporary name and
renamed, so a folder never holds half a file under a segment's name.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from ...model.audio import SAMPLE_RATE

log = logging.getLogger("emomon")


class AudioSaver:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.saved = self.failed = 0
        self._said = ""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._fail(e)

    def save(self, name: str, audio: np.ndarray) -> Path | None:
        """Write `audio` (float32 mono, 16 kHz) as FOLDER/NAME.flac; None when that failed."""
        import soundfile as sf

        path = self.folder / f"{name}.flac"
        tmp = self.folder / f".{name}.flac.part"
        try:
            # Encoded in memory and written by Python: libsndfile writing the file itself reports a
            # full disk as a traceback printed from its write callback, not as an error here.
            flac = io.BytesIO()
            sf.write(flac, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            with open(tmp, "wb") as f:  # Python's open: errors carry the system's reason (ENOSPC, EACCES, ...)
                f.write(flac.getbuffer())
            os.replace(tmp, path)
        except (OSError, sf.LibsndfileError, RuntimeError) as e:
            self._fail(e)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return None
        self.saved += 1
        return path

    def _fail(self, e: Exception) -> None:
        self.failed += 1
        reason = getattr(e, "strerror", None) or str(e)
        if reason != self._said:
            self._said = reason
            log.warning("Cannot save segment audio in '%s' (%s); scoring and logging go on.", self.folder, reason)
