"""[serve]: the settings of the WebSocket API, read with config.toml before anything heavy loads."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """[serve]: the WebSocket API."""

    host: str = "127.0.0.1"  # loopback by default; any other address needs a token
    port: int = 8765
    token: str = ""  # clients send "Authorization: Bearer TOKEN" (or ?token=TOKEN); "" = none (loopback only)
    max_streams: int = 64  # open streams at once; one more is refused (close 1013)
    queue_size: int = 64  # segments of all streams waiting for the model; beyond, the oldest is dropped
    max_speed: float = 4.0  # a stream's audio is read at most this many times faster than real time
    model_process: bool = True  # run the model in a child process, off the event loop's interpreter (GIL)
    # Web pages of these origins ("https://app.example:8443") may open streams besides the server's
    # own page; "*" = any. Clients that are not browsers send no Origin and are not concerned.
    origins: tuple[str, ...] = ()
    # A stream that sends nothing this long gets the results of what it sent, then close 1008; 0 = never.
    idle_timeout_s: float = 60.0
    # Host names clients may reach the server by, besides loopback names and IP addresses (a page
    # rebound by DNS to this machine still says its own name): "emomon.example"; "*" = any.
    allow_hosts: tuple[str, ...] = ()
    # The model process: a call that takes longer is given up (the process is replaced) and a
    # stream's end waits at most this long for its results.
    model_timeout_s: float = 120.0
    model_restarts: int = 5  # the model process dying this many times within a minute stops the server
    # Model processes, each with its own share of the cores and its own streams (the least loaded
    # takes a new one); 0 = one per core. Needs model_process.
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1 to 65535, not {self.port}")
        for origin in self.origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"origins: {origin!r} is not an origin such as 'https://app.example' (or '*')")
        if self.max_streams < 1 or self.queue_size < 1 or self.max_speed <= 0:
            raise ValueError("max_streams and queue_size must be >= 1, max_speed > 0")
        for host in self.allow_hosts:
            if host != "*" and not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise ValueError(f"allow_hosts: {host!r} is not a host name such as 'emomon.example' (or '*')")
        if self.model_timeout_s <= 0 or self.model_restarts < 1:
            raise ValueError("model_timeout_s must be > 0 and model_restarts >= 1")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 (one per core) or more, not {self.workers}")
        if self.workers != 1 and not self.model_process:
            raise ValueError("workers > 1 needs model_process = true (each worker is a model process)")
        if self.idle_timeout_s < 0:
            raise ValueError(f"idle_timeout_s must be 0 (never) or more, not {self.idle_timeout_s}")
