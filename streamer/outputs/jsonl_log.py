"""The per-segment JSON Lines log, for other programs (`--jsonl PATH`, or `-` for stdout).

One JSON object per line and segment: the CSV's fields with `shares` as an object,
`type` "segment" for final results and "interim" for the audio so far of a segment that
is still open ([outputs] interim_s), and with `--attention` the attention weights
(`attention.weights`, one row per regressor, `attention.hop_s` seconds apart) where the
model has them. Each line goes to the operating system whole as it is written, and one that
fails is cut back (line_file.py), so a run killed even with SIGKILL, or a disk that fills,
leaves whole lines, and `tail -f FILE | jq` follows a live run. File names that are not
UTF-8 are written with `\\xNN` escapes (model/errors.py: printable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .line_file import LineFile
from .record import Row

log = logging.getLogger("emomon")


def record(row: Row, attention: np.ndarray | None = None, hop_s: float = 0.0) -> dict[str, Any]:
    """The JSON object of one segment (outputs/record.py's table, record j)."""
    out = row.to_json("j", tuple(row.shares or ()))
    if attention is not None:
        out["attention"] = {"hop_s": hop_s, "weights": np.round(np.asarray(attention, float), 6).tolist()}
    return out


class JsonlLog:
    def __init__(self, path: str | Path, attention: bool = False) -> None:
        self.path = str(path)
        self.attention = attention
        self._file: LineFile | None = LineFile(self.path, "JSON Lines file")

    def write(self, row: Row, attention: np.ndarray | None = None, hop_s: float = 0.0) -> None:
        if self._file is None:
            return
        obj = record(row, attention if self.attention else None, hop_s)
        try:
            self._file.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")
        except BrokenPipeError:  # the reader of stdout went away (`| head`): stop writing, go on monitoring
            log.warning("The JSON Lines reader closed %s; JSON output stops, the rest goes on.", self._file.where)
            with contextlib.suppress(OSError):  # Python would complain again at exit while flushing stdout
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
