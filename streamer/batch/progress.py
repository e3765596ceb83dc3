"""What a user sees while `emomon batch` runs: files and audio hours done, throughput (audio
hours per hour), ETA and errors so far. A Rich progress bar on a terminal; one plain line
every `every_s` seconds when the output goes to a file or a pipe. The engines feed it the
same events, local or Ray."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class Progress:
    def __init__(self, console: Console, files: int, total_bytes: int, every_s: float = 10.0) -> None:
        self.console, self.files, self.total_bytes, self.every_s = console, files, max(1, total_bytes), every_s
        self.done = self.errors = self.segments = 0
        self.done_bytes, self.audio_s = 0, 0.0
        self.t0 = self._last = time.monotonic()
        self._bar = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]scoring"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=self.console, transient=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self.line(), total=self.total_bytes)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()

    def file_done(self, size: int, audio_s: float, segments: int, error: str, sign: int = 1) -> None:
        """A file scored; `sign` -1: one counted done whose worker died before committing it."""
        self.done += sign
        self.done_bytes += sign * size
        self.audio_s += sign * audio_s
        self.segments += sign * segments
        self.errors += sign * bool(error)
        if sign > 0:
            self.tick()

    def rate(self) -> float:
        """Audio hours per wall hour so far."""
        return self.audio_s / max(1e-9, time.monotonic() - self.t0)

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        share = self.done_bytes / self.total_bytes
        eta = elapsed * (1 - share) / share if share > 0 else None
        eta_text = "--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        return (f"{self.done}/{self.files} files, {self.audio_s / 3600:.2f} h of audio, {self.segments} segments, "
                f"{self.rate():.0f}x real time, ETA {eta_text}, {self.errors} error(s)")  # fmt: skip

    def tick(self) -> None:
        """Redraw (terminal) or print a line when `every_s` has passed (file or pipe)."""
        now = time.monotonic()
        if self._bar is not None:
            self._refresh()
        elif now - self._last >= self.every_s:
            self.console.print(f"emomon batch: {self.line()}", markup=False, highlight=False, soft_wrap=True)
            self._last = now

    def _refresh(self) -> None:
        self._bar.update(self._task, completed=self.done_bytes, description=self.line())
