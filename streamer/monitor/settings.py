"""[monitor]: the settings of live and replay, read with config.toml before anything heavy loads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorSettings:
    """[monitor]: the live and replay pipeline (where the records go: [outputs])."""

    input: str = ""  # live: input device index or (part of its) name; "" = the system default
    duration_s: float = 0.0  # live: stop after this long; 0 = until Ctrl-C or SIGTERM
    dashboard: bool = True  # the Rich dashboard on a terminal; false = one plain line per segment
    speed: float = 1.0  # replay: 1 = real time, 0 = as fast as possible (back-pressure, nothing dropped)
    queue_size: int = 8  # segments waiting for the model; live mode drops the oldest beyond this
    input_timeout_s: float = 3.0  # live: no audio from the device for this long ends the run (device gone)

    def __post_init__(self) -> None:
        if self.speed < 0 or self.duration_s < 0 or self.queue_size < 1:
            raise ValueError("speed and duration_s must be >= 0, queue_size >= 1")
        if self.input_timeout_s <= 0:
            raise ValueError(f"input_timeout_s must be a positive number of seconds, not {self.input_timeout_s}")
