"""The part live and replay share: segments from a Segmenter go to the inference worker,
results to the CSV and JSON Lines logs, saved audio, the dashboard state and/or one
printed line per segment.

Interim results: while a segment stays open longer than [monitor] interim_s, the audio
so far is offered to the worker every interim_s seconds of it (see worker.py: interim
work waits in a slot of its own and is skipped before any final segment waits)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from ...model.audio import SAMPLE_RATE
from ..audio.segmenter import Segment, Segmenter
from ..outputs.record import Job
from ..outputs.sinks import Outputs
from .dashboard import Dashboard, Header, MonitorState
from .settings import MonitorSettings
from .worker import InferenceWorker

if TYPE_CHECKING:
    from ...model.predictor import Predictor
    from ...model.tracker import SpeakerSettings


class InterimClock:
    """When a segment still open has grown by another `every_s` seconds: then `due()` gives
    the audio so far (an interim segment), else None. One clock per audio source."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._next: tuple[tuple[int, int], float] = ((0, -1), 0.0)  # ((segmenter, segment index), seconds)

    def due(self, seg: Segmenter) -> Segment | None:
        if self.every_s <= 0 or not seg.in_speech:
            return None
        key, at = self._next
        if key != (id(seg), seg.count):  # a new open segment
            key, at = (id(seg), seg.count), self.every_s
        so_far = None
        if (seg.t - seg.seg_start) / SAMPLE_RATE >= at:
            so_far = seg.open_segment()
            at += self.every_s
        self._next = (key, at)
        return so_far


class Pipeline:
    """Opens the logs (if configured) and starts the worker; `screen` is the dashboard's
    context (a no-op without one). `close()` drains the worker and closes the logs; both idempotent."""

    def __init__(
        self,
        predictor: Predictor,
        monitor: MonitorSettings,
        console: Console,
        dashboard: bool,
        drop_oldest: bool,
        stream_start: Callable[[], datetime | None] | None = None,
        input_name: str = "",
        speakers: SpeakerSettings | None = None,
        by_channel: bool = False,
    ) -> None:
        """`by_channel`: each channel of the input is its own stream and speaker (replay
        --channels each); no speaker encoder is needed then."""
        self.by_channel = by_channel
        self.interim_s = monitor.interim_s if (drop_oldest or monitor.speed > 0) else 0.0  # off as fast as possible
        stage = None
        if speakers is not None and speakers.enabled and not by_channel:
            from ...model.tracker import Speakers

            stage = Speakers(speakers)  # the encoder and the enrolled voices, before any output opens
        header = Header(input_name, **predictor.describe())
        self.state = MonitorState(predictor.emotions, header=header) if dashboard else None
        self.outputs = Outputs.open(
            monitor, predictor.emotions, None if dashboard else console, self.state, stream_start,
            speakers=stage is not None or by_channel,
        )  # fmt: skip
        self.worker = InferenceWorker(
            predictor, self.outputs, monitor.queue_size, monitor.max_batch, drop_oldest, speakers=stage
        )
        self.worker.start()
        self.screen = Dashboard(self.state, console) if self.state is not None else contextlib.nullcontext()
        self.clocks: dict[int, InterimClock] = {}  # one per segmenter

    def _job(self, source: str, seg: Segment, c: int, interim: bool = False) -> Job:
        if not self.by_channel:
            return Job(source, seg, interim=interim)
        return Job(source, seg, interim=interim, speaker=f"channel {c}", channel=c)

    def feed(self, source: str, segs: Sequence[Segmenter], block: np.ndarray, lost: int | None = None) -> None:
        """One block of audio: completed segments go to the worker; the dashboard sees the
        input. Mono: `segs[0]` takes the block. By channel: the block is (n, channels) and
        `segs[c]` takes channel c, whose segments are spoken by "channel c"."""
        for c, seg in enumerate(segs):
            for s in seg.push(block[:, c] if self.by_channel else block):
                self.worker.submit(self._job(source, s, c))
            so_far = self.clocks.setdefault(id(seg), InterimClock(self.interim_s)).due(seg)
            if so_far is not None:
                self.worker.submit_interim(self._job(source, so_far, c, interim=True))
        if self.state is not None:
            seg = max(segs, key=lambda s: s.level)  # the loudest channel
            self.state.set_input(seg.state, seg.level, self.worker.queue.qsize(), seg.background_dbfs, lost, source)

    def flush(self, source: str, segs: Sequence[Segmenter]) -> None:
        """End of a source: each open segment, if long enough, goes to the worker too."""
        for c, seg in enumerate(segs):
            self.clocks.pop(id(seg), None)
            last = seg.finish()
            if last is not None:
                self.worker.submit(self._job(source, last, c))

    def drain(self) -> None:
        """Finish every queued segment; the dashboard's queue count follows."""
        self.worker.close()
        if self.state is not None:
            self.state.set_queue(self.worker.queue.qsize())

    def close(self) -> None:
        self.drain()
        self.outputs.close()

    def extra_counts(self) -> list[str]:
        """Interim and saved-audio counts for the run's last line, where there are any."""
        w, out = self.worker, []
        if w.interim_done or w.interim_skipped:
            out.append(f"{w.interim_done} interim ({w.interim_skipped} skipped)")
        saver = self.outputs.saver
        if saver is not None:
            out.append(f"{saver.saved} saved" + (f" ({saver.failed} not saved)" if saver.failed else ""))
        return out
