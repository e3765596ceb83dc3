"""[batch]: the settings of `emomon batch`, read with config.toml before anything heavy loads.
Each key is also a flag of the command (docs/batch.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BatchSettings:
    """[batch]: recorded archives scored into a Parquet dataset."""

    out: str = ""  # output folder (segments/, files.parquet, errors.csv, summary.json); required
    engine: Literal["local", "ray"] = "local"  # local: worker processes on this machine; ray: a Ray Data pipeline
    address: str = ""  # ray: an existing cluster ("127.0.0.1:6379", "auto"); "" = start a local one for the run
    workers: int = 0  # model workers (processes, or Ray actors); 0 = this machine's cores / threads
    threads: int = 1  # torch threads per worker: one each scores most audio per core
    gpus_per_worker: float = 0.0  # ray: GPUs per actor (0.5 = two actors share one); local: > 0 runs on cuda
    channels: Literal["mix", "each"] = "mix"  # mix: channels averaged, as replay does; each: one stream per channel
    resume: bool = False  # score only the files the output folder does not hold yet
    part_s: float = 60.0  # a worker commits a part file at least this often: a crash loses at most this much

    def __post_init__(self) -> None:
        if self.workers < 0 or self.threads < 1:
            raise ValueError("workers must be 0 (automatic) or more, threads 1 or more")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be 0 or more, not {self.gpus_per_worker}")
        if self.part_s < 0:
            raise ValueError(f"part_s must be 0 (a part per file) or more seconds, not {self.part_s}")
