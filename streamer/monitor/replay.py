"""`emomon replay`: recorded audio through the same pipeline as the microphone.

file blocks -> a Scorer (pipeline.py: cut and scored here, or by `emomon serve` with
--server) -> the Display's sinks (CSV log, one printed line per segment, ...). At `speed` 1
the blocks are paced in real time, at 0 they go as fast as the model takes them
(back-pressure: the queue blocks, nothing is dropped). Each file is one stream and one
normalisation session. A file that cannot be read is reported and skipped; the exit code is
1 when any failed, or when an output failed on the way (said when it did; the others go
on). Ctrl-C stops the source, flushes the open segment, drains the worker and closes the
CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from rich.console import Console

from ...model.errors import EmomonError, printable
from ..audio.sources import FileSource, audio_files
from ..outputs.settings import OutputSettings
from .pipeline import Display, Scorer, last_line


def replay(
    paths: list[str],
    scorer: Callable[[Display], Scorer],
    outputs: OutputSettings,
    speed: float,
    console: Console,
    dashboard: bool = False,
    each: bool = False,
) -> int:
    """`scorer` makes the run's scorer around its Display; `speed`: 1 real time, 0 as fast as
    the model takes the audio. `each`: every channel of a file
    is its own stream, spoken by "channel N" (a call recorded with one person per channel);
    else the channels are averaged."""
    files, problems = audio_files(paths)
    for f, why in problems:
        console.print(f"emomon: {printable(f)}: {why}", markup=False, highlight=False, soft_wrap=True)
    failed = len(problems)
    name = printable(files[0].name) + (f" (+{len(files) - 1} more)" if len(files) > 1 else "") if files else "no file"
    display = Display(outputs, console, dashboard, name)
    try:
        run = scorer(display)
        try:
            for f in files:
                try:
                    source = FileSource(f, each=each)
                except EmomonError as e:  # opened here, so that only a file that opens is a stream
                    console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                    failed += 1
                    continue
                feed = run.open(str(f), source.rate, each)
                try:
                    for block in paced(source.blocks(), speed, source.rate):
                        feed.push(block)
                except EmomonError as e:
                    console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                    failed += 1
                finally:  # also on Ctrl-C and on a file that breaks off: keep what was heard
                    feed.finish()
            run.drain()  # while the dashboard still shows the last segments
        except KeyboardInterrupt:
            console.print("emomon: interrupted; finishing the segments already cut")
        finally:
            run.close()
    finally:
        display.close()
    counts = run.counts()
    head = [f"{counts.processed} segment(s) from {len(files)} file(s)" + (f" via {run.server}" if run.server else "")]
    head += [f"{counts.dropped} dropped"] if counts.dropped else []
    head += [f"{failed} failed"] if failed else []
    head += [f"{display.failed_outputs} output(s) failed"] if display.failed_outputs else []
    console.print(last_line(counts, head, display.saved()))
    return 1 if failed or display.failed_outputs else 0


def paced(blocks: Iterable[np.ndarray], speed: float, rate: int) -> Iterator[np.ndarray]:
    """Blocks of audio at `rate` Hz at `speed` x real time, like a sound card gives them (a block
    is there once it has been "recorded"); at 0 as fast as the caller takes them."""
    import time

    t0, pos = time.perf_counter(), 0.0
    for block in blocks:
        pos += len(block) / rate
        if speed > 0:
            time.sleep(max(0.0, t0 + pos / speed - time.perf_counter()))
        yield block
