"""[outputs]: where every run's records go (live, replay, --server and serve alike)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputSettings:
    """[outputs]: the logs, saved audio and interim results of live, replay and serve."""

    csv: str = ""  # per-segment CSV log; "" = none
    jsonl: str = ""  # per-segment JSON Lines log; "-" = stdout (the human output then goes to stderr); "" = none
    attention: bool = False  # JSON Lines: add each segment's attention weights (Architecture 2 models)
    save_audio: str = ""  # folder for each scored segment as 16 kHz FLAC named by its id; "" = off
    interim_s: float = 3.0  # score a segment still open every this many seconds (dashboard, JSONL); 0 = off
    csv_interim: bool = False  # also write interim results to the CSV (status "interim")

    def __post_init__(self) -> None:
        if self.interim_s < 0:
            raise ValueError(f"interim_s must be 0 (off) or a positive number of seconds, not {self.interim_s}")
