"""`emomon replay`: recorded audio through the same pipeline as the microphone.

source blocks (audio/sources.py: files, standard input, network streams) -> a Scorer
(pipeline.py: cut and scored here, or by `emomon serve` with --server) -> the Display's
sinks (CSV log, one printed line per segment, ...). At `speed` 1 the blocks are paced in
real time, at 0 they go as fast as the model takes them (back-pressure: the queue blocks,
nothing is dropped); a live network stream is paced by itself, never by `speed`, and one
that drops and comes back within [input] reconnect_s leaves a `lost` row of the gap. Each
input is one stream and one normalisation session. An input that cannot be read is
reported and skipped; the exit code is 1 when any failed, or when an output failed on the
way (said when it did; the others go on). Ctrl-C stops the source, flushes the open
segment, drains the worker and closes the CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from rich.console import Console

from ...model.errors import EmomonError, printable
from ...model.media import shown
from ..audio.sources import MediaSource, Source, audio_files, open_source
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
    opener: Callable[[str | Path], Source] | None = None,
    duration_s: float | None = None,
) -> int:
    """`scorer` makes the run's scorer around its Display; `speed`: 1 real time, 0 as fast as
    the model takes the audio. `each`: every channel of an input is its own stream, spoken
    by "channel N" (a call recorded with one person per channel); else the channels are
    averaged. `opener` opens each input (default: audio/sources.py's open_source);
    `duration_s`: each input stops after this much of its audio."""
    opener = opener or (lambda target: open_source(target, each))
    files, problems = audio_files(paths)
    for f, why in problems:
        console.print(f"emomon: {printable(f)}: {why}", markup=False, highlight=False, soft_wrap=True)
    failed = len(problems)
    name = shown_name(files[0]) + (f" (+{len(files) - 1} more)" if len(files) > 1 else "") if files else "no input"
    display = Display(outputs, console, dashboard, name)
    try:
        run = scorer(display)
        try:
            for f in files:
                try:
                    source = opener(f)
                except EmomonError as e:  # opened here, so that only an input that opens is a stream
                    console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                    failed += 1
                    continue
                if isinstance(source, MediaSource):  # a network stream's state in the dashboard's header
                    source.on_state = lambda state, name=source.name: display.source_state(name, state)
                feed = run.open(source.name, source.rate, each)
                try:
                    blocks = upto(source.blocks(), duration_s, source.rate)
                    for block in blocks if source.live else paced(blocks, speed, source.rate):
                        feed.push(block)
                        while not source.gaps.empty():  # a stream that dropped and came back
                            feed.lost(*source.gaps.get())
                except EmomonError as e:
                    console.print(f"emomon: {e}", markup=False, highlight=False, soft_wrap=True)
                    failed += 1
                finally:  # also on Ctrl-C and on an input that breaks off: keep what was heard
                    source.close()
                    feed.finish()
            run.drain()  # while the dashboard still shows the last segments
        except KeyboardInterrupt:
            console.print("emomon: interrupted; finishing the segments already cut")
        finally:
            run.close()
    finally:
        display.close()
    counts = run.counts()
    noun = "file(s)" if all(isinstance(f, Path) for f in files) else "input(s)"  # stdin and streams are inputs
    head = [f"{counts.processed} segment(s) from {len(files)} {noun}" + (f" via {run.server}" if run.server else "")]
    head += [f"{counts.dropped} dropped"] if counts.dropped else []
    head += [f"{failed} failed"] if failed else []
    head += [f"{display.failed_outputs} output(s) failed"] if display.failed_outputs else []
    console.print(last_line(counts, head, display.saved()))
    return 1 if failed or display.failed_outputs else 0


def upto(blocks: Iterable[np.ndarray], seconds: float | None, rate: int) -> Iterator[np.ndarray]:
    """The first `seconds` of the blocks (all of them for None)."""
    left = None if seconds is None else int(seconds * rate)
    for block in blocks:
        if left is not None:
            if left <= 0:
                return
            block, left = block[:left], left - len(block)
        yield block


def shown_name(target: str | Path) -> str:
    """The dashboard's name for an input: a file's name, or what its source calls it."""
    return printable(target.name) if isinstance(target, Path) else shown(target)


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
