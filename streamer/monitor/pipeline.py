"""What live and replay share: a `Scorer` turns each stream's audio into results, and the
`Display` hands every result to the outputs (CSV, JSON Lines, saved audio, the dashboard,
one printed line per segment).

The scorer is a declared interface with two implementations, chosen by `--server`:
`LocalScorer` cuts each stream here (audio/stream.py) and scores the segments on the
inference worker (worker.py), whose model is the Predictor in this process or the same
Predictor in a process of its own (serve/model_process.py); `RemoteScorer`
(serve/remote.py) sends the audio to an `emomon serve`, which cuts and scores it there.

Interim results: while a segment stays open longer than [outputs] interim_s, the audio
so far is offered to the worker every interim_s seconds of it (worker.py: interim work
waits in a slot of its own and is skipped before any final segment waits).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..audio.stream import AudioStream
from ..outputs.record import Result, Row
from ..outputs.settings import OutputSettings
from ..outputs.sinks import Outputs
from .dashboard import Dashboard, Header, MonitorState
from .settings import MonitorSettings
from .worker import InferenceWorker

if TYPE_CHECKING:
    from rich.console import Console

    from ...model.interface import Engine
    from ...model.tracker import SpeakerSettings
    from ..audio.segmenter import VadSettings


@dataclass
class Counts:
    """A run's tally, for its last line."""

    processed: int = 0
    dropped: int = 0
    failed: int = 0
    interim: int = 0
    interim_skipped: int = 0


class Feed(Protocol):
    """One stream (a file, the microphone) on its way to a scorer."""

    def push(self, block: np.ndarray, lost: int | None = None) -> None:
        """The next block: float32 mono at the stream's rate, or (n, channels) by channel.
        `lost`: input blocks the source lost so far (for the dashboard)."""

    def finish(self) -> None:
        """The end of the stream: what is still open is scored; may raise EmomonError."""

    def lost(self, start_s: float, end_s: float, why: str) -> None:
        """Input lost between these stream times (the source put silence in its place): a
        row with status `lost` in the outputs."""


class Scorer(Protocol):
    """Where a run's streams are scored; results reach the Display given at construction."""

    server: str  # the `emomon serve` that scores, or "" for this process

    def open(self, source: str, rate: int, each: bool = False) -> Feed:
        """A new stream of blocks at `rate` Hz; `each`: every channel is its own stream and speaker."""

    def drain(self) -> None:
        """Wait until every result of the streams finished so far reached the Display."""

    def counts(self) -> Counts: ...

    def close(self) -> None:
        """Drain, then let go of the model or the connection; idempotent."""


class Display:
    """The outputs [outputs] asks for and the dashboard, opened once the scorer knows the
    model's emotions (a server tells them when the first stream opens). Results arrive on
    the scorer's thread; `close()` stops the dashboard and closes the logs."""

    def __init__(
        self,
        settings: OutputSettings,
        console: Console,
        dashboard: bool,
        input_name: str,
        stream_start: Callable[[], datetime | None] | None = None,
    ) -> None:
        self.settings, self.console, self.dashboard = settings, console, dashboard
        self.input_name, self.stream_start = input_name, stream_start
        self.outputs: Outputs | None = None
        self.state: MonitorState | None = None
        self._screen: contextlib.AbstractContextManager | None = None
        self._lock = threading.Lock()  # results come from the scorer's thread, lost input from the source's

    def open(self, emotions: tuple[str, ...], describe: dict[str, str], speakers: bool, save_audio: bool) -> None:
        """Open the outputs and start the dashboard (once; later calls do nothing)."""
        if self.outputs is not None:
            return
        if self.dashboard:
            self.state = MonitorState(emotions, header=Header(self.input_name, **describe))
        console = None if self.dashboard else self.console
        self.outputs = Outputs.open(self.settings, emotions, console, self.state, self.stream_start,
                                    save_audio=save_audio, speakers=speakers)  # fmt: skip
        self._screen = Dashboard(self.state, self.console) if self.state is not None else contextlib.nullcontext()
        self._screen.__enter__()

    def __call__(self, result: Result) -> None:
        """A result scored in this process (the worker's thread)."""
        if self.outputs is not None:
            with self._lock:
                self.outputs(result)

    def write(self, row: Row) -> None:
        """A record made elsewhere: --server's (its receiver's thread), lost input (the source's)."""
        if self.outputs is not None:
            with self._lock:
                self.outputs.write(row)

    def lost(self, source: str, start_s: float, end_s: float, why: str) -> None:
        """A row with status `lost` for input that never reached the segmenter."""
        self.write(
            Row(source, -1, start_s, end_s, status="lost", error=f"{end_s - start_s:.2f} s of input lost: {why}")
        )

    def set_input(self, vad: str, level: float, queue: int, background_dbfs: float, lost: int | None, source: str):
        if self.state is not None:
            self.state.set_input(vad, level, queue, background_dbfs, lost, source)

    def source_state(self, name: str, state: str) -> None:
        """A network stream's state (connected, reconnecting) for the dashboard's header."""
        if self.state is not None:
            self.state.set_source_state(name, state)

    @property
    def failed_outputs(self) -> int:
        """How many outputs failed during the run (each said once when it did)."""
        return 0 if self.outputs is None else len(self.outputs.failed)

    def saved(self) -> list[str]:
        """The saved-audio count for the run's last line, where audio is saved."""
        saver = None if self.outputs is None else self.outputs.saver
        if saver is None:
            return []
        return [f"{saver.saved} saved" + (f" ({saver.failed} not saved)" if saver.failed else "")]

    def close(self) -> None:
        if self._screen is not None:
            screen, self._screen = self._screen, None
            screen.__exit__(None, None, None)
        if self.outputs is not None:
            self.outputs.close()


class LocalScorer:
    """Each stream cut here (AudioStream) and scored by the inference worker in this process."""

    server = ""

    def __init__(
        self,
        predictor: Engine,
        display: Display,
        vad: VadSettings,
        monitor: MonitorSettings,
        max_batch: int,
        drop_oldest: bool,
        speakers: SpeakerSettings | None = None,
        by_channel: bool = False,
    ) -> None:
        """`max_batch`: [runtime]'s, segments per model call. `drop_oldest`: a live source never
        waits for the model (worker.py). `by_channel`:
        each channel of the input is its own stream and speaker (replay --channels each); no
        speaker encoder is needed then."""
        self.vad, self.display = vad, display
        interim_s = display.settings.interim_s
        self.interim_s = interim_s if (drop_oldest or monitor.speed > 0) else 0.0  # off as fast as possible
        stage = None
        if speakers is not None and speakers.enabled and not by_channel:
            from ...model.tracker import Speakers

            stage = Speakers(speakers)  # the encoder and the enrolled voices, before any output opens
        display.open(predictor.emotions, predictor.describe(), speakers=stage is not None or by_channel,
                     save_audio=True)  # fmt: skip
        self.worker = InferenceWorker(
            predictor, display, monitor.queue_size, max_batch, drop_oldest, speakers=stage
        ).start()  # fmt: skip

    def open(self, source: str, rate: int, each: bool = False) -> LocalFeed:
        return LocalFeed(self, source, AudioStream(self.vad, rate, each=each, interim_s=self.interim_s))

    def drain(self) -> None:
        self.worker.close()
        if self.display.state is not None:
            self.display.state.set_queue(self.worker.queue.qsize())

    def counts(self) -> Counts:
        w = self.worker
        return Counts(w.processed, w.dropped, w.failed, w.interim_done, w.interim_skipped)

    def close(self) -> None:
        self.drain()  # the worker's close is idempotent


class LocalFeed:
    def __init__(self, scorer: LocalScorer, source: str, stream: AudioStream) -> None:
        self.scorer, self.source, self.stream = scorer, source, stream

    def _submit(self, cuts) -> None:
        self.scorer.worker.submit_cuts(self.source, cuts)

    def push(self, block: np.ndarray, lost: int | None = None) -> None:
        self._submit(self.stream.push(block))
        seg = self.stream.loudest if self.scorer.display.state is not None else None  # the dashboard's meter
        if seg is not None:
            queued = self.scorer.worker.queue.qsize()
            self.scorer.display.set_input(seg.state, seg.level, queued, seg.background_dbfs, lost, self.source)

    def finish(self) -> None:
        self._submit(self.stream.finish())

    def lost(self, start_s: float, end_s: float, why: str) -> None:
        self.scorer.display.lost(self.source, start_s, end_s, why)


def last_line(counts: Counts, head: list[str], saved: list[str]) -> str:
    """The run's last line: `head` (what was read), then interim and saved-audio counts."""
    extra = []
    if counts.interim or counts.interim_skipped:
        extra.append(f"{counts.interim} interim ({counts.interim_skipped} skipped)")
    return ", ".join(head + extra + saved)
