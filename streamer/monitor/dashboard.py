"""The Rich terminal dashboard: pure functions from a state snapshot to renderables.

Threads write into `MonitorState` (the worker its results, the source loop the VAD state
and input level); the dashboard's own `Live` pulls `snapshot()` at its refresh rate
(`get_renderable`), so nothing pushes into the screen and rendering never blocks audio.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..outputs.record import Row

if TYPE_CHECKING:
    from ...model.predictor import Prediction

SPARK = "▁▂▃▄▅▆▇█"
TREND_ALPHA = 0.3  # exponential smoothing of the per-emotion trend
BAR_WIDTH = 30


@dataclass(frozen=True)
class Header:
    """What runs: the input, the model and the compute path (the dashboard's first line)."""

    input: str = ""  # device name and rate, or the file being replayed
    model: str = ""  # bundle folder name
    encoder: str = ""
    adapter: str = ""  # not shown: the -v log line says it (it ran past 100 columns)
    emotions: str = ""
    device: str = ""
    dtype: str = ""


@dataclass(frozen=True)
class Snapshot:
    emotions: tuple[str, ...]
    latest: dict[str, float]  # shares of the latest segment
    latest_label: str
    trend: list[list[float]]  # smoothed shares, oldest first (one list per segment)
    attention: list[float]  # mean attention over the latest segment
    recent: list[tuple]  # (index, start_s, end_s, top, share, latency_ms, status, speaker)
    vad: str
    level: float  # RMS of the latest VAD frame
    background_dbfs: float  # the segmenter's background level
    lost: int | None  # input blocks the capture lost (overflows); None for files
    segments: int
    dropped: int
    failed: int
    queue: int
    p50: float | None
    p95: float | None
    rtf: float | None
    header: Header = Header()
    elapsed_s: float = 0.0
    interim: int = 0  # interim results shown
    speakers: list[SpeakerRow] = field(default_factory=list)  # with [speakers]: in the order first heard


@dataclass(frozen=True)
class SpeakerRow:
    """One speaker's line: their latest shares, smoothed trend and how long they have spoken."""

    name: str
    latest: dict[str, float]
    trend: list[list[float]]
    segments: int
    seconds: float


@dataclass
class MonitorState:
    emotions: tuple[str, ...]
    history: int = 400  # trend points kept; the screen shows as many as its width allows
    header: Header = Header()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.latest: dict[str, float] = {}
        self.latest_label = "waiting for speech"
        self.trend: deque[list[float]] = deque(maxlen=self.history)
        self.attention: list[float] = []
        self.recent: deque[tuple] = deque(maxlen=8)
        self.latencies: deque[float] = deque(maxlen=200)
        self.vad, self.level, self.queue, self.background_dbfs = "silence", 0.0, 0, -100.0
        self.lost: int | None = None
        self.segments = self.dropped = self.failed = self.interim = 0
        self.model_s = self.audio_s = 0.0
        self.started = time.monotonic()
        self.speakers: dict[str, dict] = {}  # name -> latest, trend, segments, seconds

    def add(self, row: Row, prediction: Prediction | None = None) -> None:
        """Called for every record (the worker's thread, or --server's receiver); `prediction`
        where the model ran here (its attention and cost)."""
        with self._lock:
            if row.interim:  # the audio so far of an open segment: the bars only
                if row.shares is not None:
                    self.interim += 1
                    self.latest = dict(row.shares)
                    self.latest_label = f"#{row.segment}  {row.start_s:.2f}-{row.end_s:.2f} s  (interim, still talking)"
                return
            if row.status == "dropped":
                self.dropped += 1
            elif row.status == "lost":  # the input panel counts lost blocks
                pass
            elif row.status == "error" or row.shares is None:
                self.failed += 1
            if row.status != "ok" or row.shares is None:
                self.recent.append((row.segment, row.start_s, row.end_s, "", 0.0, None, row.status, ""))
                return
            shares, top = row.shares, row.top_emotion
            self.segments += 1
            self.latest = dict(shares)
            self.latest_label = f"#{row.segment}  {row.start_s:.2f}-{row.end_s:.2f} s"
            prev = self.trend[-1] if self.trend else list(shares.values())
            self.trend.append([(1 - TREND_ALPHA) * a + TREND_ALPHA * b for a, b in zip(prev, shares.values())])
            attention = None if prediction is None else prediction.attention
            self.attention = [] if attention is None else list(np.asarray(attention).mean(0))
            self.latencies.append(row.latency_ms or 0.0)
            if prediction is not None:
                self.model_s += (prediction.encoder_ms + prediction.regressor_ms) / 1e3 / max(1, prediction.batch_size)
            self.audio_s += row.end_s - row.start_s
            self.recent.append((row.segment, row.start_s, row.end_s, top, shares[top], row.latency_ms, "ok",
                                row.speaker or ""))  # fmt: skip
            if row.speaker:
                who = self.speakers.setdefault(row.speaker, {"trend": deque(maxlen=self.history),
                                                             "segments": 0, "seconds": 0.0})  # fmt: skip
                last = who["trend"][-1] if who["trend"] else list(shares.values())
                who["trend"].append([(1 - TREND_ALPHA) * a + TREND_ALPHA * b for a, b in zip(last, shares.values())])
                who["latest"] = dict(shares)
                who["segments"] += 1
                who["seconds"] += row.end_s - row.start_s

    def set_input(
        self,
        vad: str,
        level: float,
        queue: int,
        background_dbfs: float = -100.0,
        lost: int | None = None,
        source: str | None = None,
    ) -> None:
        """Called by the source loop for every block; `source` names a replayed file."""
        with self._lock:
            self.vad, self.level, self.queue, self.background_dbfs = vad, level, queue, background_dbfs
            self.lost = lost
            if source is not None and lost is None and not self.header.input.startswith(Path(source).name):
                self.header = replace(self.header, input=Path(source).name)

    def set_source_state(self, name: str, state: str) -> None:
        """A network stream's state beside its name in the header ("reconnecting", ...)."""
        with self._lock:
            self.header = replace(self.header, input=f"{Path(name).name} ({state})" if state else Path(name).name)

    def set_queue(self, queue: int) -> None:
        with self._lock:
            self.queue = queue

    def snapshot(self) -> Snapshot:
        with self._lock:
            lat = np.array(self.latencies) if self.latencies else None
            return Snapshot(
                emotions=self.emotions, latest=dict(self.latest), latest_label=self.latest_label,
                trend=[list(t) for t in self.trend], attention=list(self.attention), recent=list(self.recent),
                vad=self.vad, level=self.level, background_dbfs=self.background_dbfs, lost=self.lost,
                segments=self.segments,
                dropped=self.dropped, failed=self.failed, queue=self.queue,
                p50=None if lat is None else float(np.percentile(lat, 50)),
                p95=None if lat is None else float(np.percentile(lat, 95)),
                rtf=self.model_s / self.audio_s if self.audio_s else None,
                header=self.header, elapsed_s=time.monotonic() - self.started, interim=self.interim,
                speakers=[SpeakerRow(n, dict(w["latest"]), [list(t) for t in w["trend"]], w["segments"], w["seconds"])
                          for n, w in self.speakers.items()],
            )  # fmt: skip


def spark(values: list[float], lo: float = 0.0, hi: float | None = None) -> str:
    if not values:
        return ""
    hi = max(values) if hi is None else hi
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, max(0, int((v - lo) / span * (len(SPARK) - 1) + 0.5)))] for v in values)


def fit(values: list[float], width: int) -> list[float]:
    """Average neighbouring values so that at most `width` remain (attention over long segments)."""
    if len(values) <= width:
        return values
    edges = np.linspace(0, len(values), width + 1).astype(int)
    return [float(np.mean(values[a:b])) for a, b in zip(edges[:-1], edges[1:])]


def trend_width(s: Snapshot, screen: int) -> int:
    """Columns left for the trend sparkline on a screen `screen` characters wide."""
    name = max((len(e) for e in s.emotions), default=8)
    return max(8, screen - name - BAR_WIDTH - 4 - 3 - 4)  # value, column gaps, panel borders


def shares_table(s: Snapshot, width: int = BAR_WIDTH, trend: int = 40) -> Table:
    t = Table.grid(padding=(0, 1))
    t.add_column(justify="right", style="bold")
    t.add_column()
    t.add_column(justify="right")
    t.add_column()
    top = max(s.latest, key=s.latest.get) if s.latest else None
    for k, e in enumerate(s.emotions):
        v = s.latest.get(e, 0.0)
        bar = Text("█" * int(round(v * width)) + "·" * (width - int(round(v * width))),
                   style="green" if e == top else "cyan")  # fmt: skip
        line = spark([row[k] for row in s.trend[-trend:]], 0.0, 1.0)
        t.add_row(e, bar, f"{v:.2f}", Text(line, style="magenta"))
    return t


def recent_table(s: Snapshot) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False)
    cols = ("#", "time (s)", *(("speaker",) if s.speakers else ()), "top", "share", "latency", "status")
    for col in cols:
        t.add_column(col, justify="right" if col in ("#", "share", "latency") else "left")
    for idx, a, b, top, share, lat, status, who in reversed(s.recent):
        t.add_row(str(idx), f"{a:.2f}-{b:.2f}", *((who,) if s.speakers else ()), top, f"{share:.2f}" if top else "",
                  "" if lat is None else f"{lat:.0f} ms", status)  # fmt: skip
    return t


def speakers_table(s: Snapshot, trend: int = 40) -> Table:
    """One row per speaker: their top emotion in their latest segment and its share, how long
    they have spoken, and the trend of that emotion over their segments."""
    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("speaker", "top", "share", "spoken", "trend"):
        t.add_column(col, justify="right" if col in ("share", "spoken") else "left")
    for row in s.speakers:
        top = max(row.latest, key=row.latest.get)
        k = s.emotions.index(top)
        line = spark([v[k] for v in row.trend[-trend:]], 0.0, 1.0)
        t.add_row(row.name, top, f"{row.latest[top]:.2f}", f"{row.seconds:.0f} s", Text(line, style="magenta"))
    return t


def stats_line(s: Snapshot) -> Text:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    rtf = "-" if s.rtf is None else f"{s.rtf:.2f}"
    return Text(
        f"segments {s.segments}   dropped {s.dropped}   failed {s.failed}   interim {s.interim}   queue {s.queue}   "
        f"latency p50 {ms(s.p50)} p95 {ms(s.p95)}   RTF {rtf}"
    )


def header_line(s: Snapshot) -> Text:
    """One line: input, model (bundle, encoder, emotions), compute path, elapsed time."""
    h, t = s.header, int(s.elapsed_s)
    # a hub id's or folder's last part
    encoder = h.encoder.rstrip("/").rsplit("/", 1)[-1]
    return Text.assemble(
        (h.input or "-", "bold"), (" · ", "dim"),
        (h.model or "-", "bold"), (f" ({encoder}, {h.emotions})" if encoder else ""), (" · ", "dim"),
        (f"{h.device} {h.dtype}".strip() or "-", "bold"), (" · ", "dim"),
        (f"{t // 3600:d}:{t // 60 % 60:02d}:{t % 60:02d}", "bold"),
        no_wrap=True, overflow="ellipsis",
    )  # fmt: skip


def render(s: Snapshot, screen: int = 100) -> Group:
    """The whole screen, `screen` columns wide, from one snapshot (pure: same snapshot, same output)."""
    level_dbfs = 20 * np.log10(max(s.level, 1e-5))
    level_bar = "█" * max(0, min(20, int((level_dbfs + 60) / 3)))  # -60 .. 0 dBFS
    vad = Text(
        f"VAD {s.vad:<7} input {level_bar:<20} {level_dbfs:4.0f} dBFS   background {s.background_dbfs:4.0f} dBFS"
        + ("" if s.lost is None else f"   input lost {s.lost} blocks"),
        style="bold red" if s.vad == "speech" else "dim",
    )
    rows = [shares_table(s, trend=trend_width(s, screen))]
    if s.attention:  # Architecture 2 only: the pooled and Architecture-1 regressors attend to nothing
        rows += [Text(""), Text("attention " + spark(fit(s.attention, 60)), style="yellow")]
    body = Group(*rows)
    return Group(
        header_line(s),
        Panel(body, title=f"emotion shares  {s.latest_label}", subtitle="bars: latest segment, right: trend"),
        vad,
        *([Panel(speakers_table(s, trend=max(8, screen - 40)), title="speakers")] if s.speakers else []),
        Panel(recent_table(s), title="recent segments"),
        stats_line(s),
    )


class Dashboard:
    """One thread owns the Live display; it pulls snapshots 4 times a second."""

    def __init__(self, state: MonitorState, console: Console) -> None:
        self.state = state
        self.live = Live(get_renderable=lambda: render(state.snapshot(), console.width), console=console,
                         refresh_per_second=4, transient=False)  # fmt: skip

    def __enter__(self) -> Dashboard:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.refresh()
        self.live.__exit__(None, None, None)
