"""A virtual microphone for machines without a sound card (CI, containers, the live test
and benchmark): a PulseAudio null sink whose monitor source is the default input, so what
is played into the sink (`paplay --device=vmic file.wav`) is what `emomon live --input
pulse` hears. Needs pulseaudio and pactl (make system-deps)."""

from __future__ import annotations

import subprocess
import time

SINK = "vmic"


def pactl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)


def ensure_virtual_mic() -> bool:
    """Start PulseAudio if it is not running, add the null sink, make its monitor the default
    input. Returns whether this call started the daemon (then `stop_pulse()` when done)."""
    started = pactl("info").returncode != 0
    if started:
        subprocess.run(
            ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
             f"--load=module-null-sink sink_name={SINK}", "--load=module-always-sink"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for _ in range(50):
            if pactl("info").returncode == 0:
                break
            time.sleep(0.1)
    if SINK not in pactl("list", "short", "sinks").stdout:
        pactl("load-module", "module-null-sink", f"sink_name={SINK}")
    pactl("set-default-sink", SINK)
    pactl("set-default-source", f"{SINK}.monitor")
    return started


def stop_pulse() -> None:
    subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)
