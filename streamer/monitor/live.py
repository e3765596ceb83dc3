"""`emomon live`: the microphone through VAD and the model, until Ctrl-C, SIGTERM or --duration.

The capture never waits for the model: the worker queue drops its oldest segment when
full, and every dropped segment is still logged (status "dropped") and counted. Input the
device or the capture queue lost is logged too, as a row with status "lost" and its span
(the stream keeps silence in its place, so times stay the device's).
Shutdown order: stop the source, flush the open segment, drain the scorer, close the
outputs. The same order runs when the input device or the server fails or the device goes
silent; live() then says so in one sentence and returns 1. With --server the same loop
streams to `emomon serve` (pipeline.py: the Scorer).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console

from ...model.errors import EmomonError
from ..audio.capture import Microphone, stop_signal
from ..outputs.settings import OutputSettings
from .pipeline import Display, Scorer, last_line


def live(
    scorer: Callable[[Display], Scorer],
    mic: Microphone,
    outputs: OutputSettings,
    duration: float | None,
    console: Console,
    dashboard: bool = False,
) -> int:
    """`scorer` makes the run's scorer around its Display; `mic` is resolved, not yet open
    (a wrong device is said before the model loads)."""
    display = Display(outputs, console, dashboard, f"{mic.name} ({mic.rate} Hz)", stream_start=lambda: mic.started)
    fault: EmomonError | None = None
    try:
        run = scorer(display)
        feed = run.open(mic.name, mic.rate)
        by = f", scored by {run.server}" if run.server else ""
        console.print(f"listening on {mic.name} ({mic.rate} Hz){by}; Ctrl-C stops", soft_wrap=True)
        with stop_signal(duration) as stop:
            try:
                with mic:
                    for block in mic.blocks(stop):
                        feed.push(block, lost=mic.overflows + mic.lost_blocks)
                        while not mic.gaps.empty():  # audio lost before this block: a `lost` row
                            feed.lost(*mic.gaps.get())
            except KeyboardInterrupt:
                pass
            except EmomonError as e:  # the device, or the server
                fault = e
            finally:
                try:
                    feed.finish()
                except EmomonError as e:
                    fault = fault or e
                run.close()
    finally:
        display.close()
    lost = mic.overflows + mic.lost_blocks
    c = run.counts()
    head = [f"{c.processed} segment(s)", f"{c.dropped} dropped", f"{c.failed} failed"]
    head += [f"{display.failed_outputs} output(s) failed"] if display.failed_outputs else []
    line = last_line(c, head, display.saved()) + (f", {lost} input block(s) lost" if lost else "")
    console.print(line + (f" via {run.server}" if run.server else ""))
    if fault is not None:
        print(f"emomon: {fault}", file=sys.stderr)
        return 1
    return 1 if display.failed_outputs else 0
