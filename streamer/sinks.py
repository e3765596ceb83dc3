"""Where results go: the CSV log and one plain printed line per segment (--no-dashboard)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console

from .csv_log import CsvLog, Row
from .dashboard import MonitorState
from .worker import Result


def describe(result: Result) -> str:
    """One plain line for a segment."""
    seg = result.job.segment
    where = f"{Path(result.job.source).name} #{seg.index} {seg.start_s:7.2f}-{seg.end_s:7.2f} s"
    if result.status != "ok" or result.prediction is None:
        return f"{where}  {result.status.upper()}: {result.error}"
    top = sorted(result.prediction.shares.items(), key=lambda kv: -kv[1])[:3]
    shares = "  ".join(f"{e} {v:.2f}" for e, v in top)
    return f"{where}  {shares}  ({result.latency_ms:.0f} ms)"


def make_sink(
    log: CsvLog | None,
    console: Console | None,
    stream_start: Callable[[], datetime | None] | None = None,
    state: MonitorState | None = None,
) -> Callable[[Result], None]:
    """A result handler for the worker thread (the only writer). With `stream_start` (live
    mode: the wall time of stream time 0) each row's wall_time is the ISO 8601 time the
    segment began; `state` feeds the dashboard, `console` gets one plain line per segment."""

    def sink(result: Result) -> None:
        seg = result.job.segment
        if log is not None:
            t0 = stream_start() if stream_start else None
            wall = (t0 + timedelta(seconds=seg.start_s)).isoformat(timespec="milliseconds") if t0 else ""
            shares = result.prediction.shares if result.prediction else None
            log.write(
                Row(
                    result.job.source, seg.index, seg.start_s, seg.end_s, wall, shares, result.latency_ms, result.status
                )
            )
        if state is not None:
            state.add(result)
        if console is not None:
            console.print(describe(result), markup=False, highlight=False, soft_wrap=True)

    return sink
