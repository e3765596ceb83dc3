"""`emomon live`: the microphone through VAD and the model, until Ctrl-C, SIGTERM or --duration.

The capture never waits for the model: the worker queue drops its oldest segment when
full, and every dropped segment is still logged (status "dropped") and counted.
Shutdown order: stop the source, flush the open segment, drain the worker, close the CSV.
The same order runs when the input device fails or goes silent; live() then says so in
one sentence and returns 1.
"""

from __future__ import annotations

import sys

from rich.console import Console

from ...model.predictor import Predictor
from ...model.tracker import SpeakerSettings
from ..audio.capture import DeviceError, Microphone, stop_signal
from ..audio.segmenter import Segmenter, VadSettings
from .pipeline import Pipeline
from .settings import MonitorSettings


def live(
    predictor: Predictor,
    device: str | None,
    vad: VadSettings,
    monitor: MonitorSettings,
    duration: float | None,
    console: Console,
    dashboard: bool = False,
    speakers: SpeakerSettings | None = None,
) -> int:
    mic = Microphone(device, timeout_s=monitor.input_timeout_s)  # first: a wrong device fails before anything opens
    seg = Segmenter(vad)
    pipe = Pipeline(
        predictor, monitor, console, dashboard, drop_oldest=True, stream_start=lambda: mic.started,
        input_name=f"{mic.name} ({mic.rate} Hz)", speakers=speakers,
    )  # fmt: skip
    fault: DeviceError | None = None
    console.print(f"listening on {mic.name} ({mic.rate} Hz); Ctrl-C stops", soft_wrap=True)
    with stop_signal(duration) as stop:
        try:
            with mic, pipe.screen:
                for block in mic.blocks(stop):
                    pipe.feed(mic.name, [seg], block, lost=mic.overflows + mic.lost_blocks)
        except KeyboardInterrupt:
            pass
        except DeviceError as e:
            fault = e
        finally:
            pipe.flush(mic.name, [seg])
            pipe.close()
    lost = mic.overflows + mic.lost_blocks
    w = pipe.worker
    counts = [f"{w.processed} segment(s)", f"{w.dropped} dropped", f"{w.failed} failed", *pipe.extra_counts()]
    console.print(", ".join(counts + ([f"{lost} input block(s) lost"] if lost else [])))
    if fault is not None:
        print(f"emomon: {fault}", file=sys.stderr)
        return 1
    return 0
