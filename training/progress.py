"""The training run's progress on the terminal: one bar over all fits, a line per fit."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    pass  # the whole config.toml, assembled on top

log = logging.getLogger("emomon")


class TrainingProgress:
    """One Rich display for a whole run: folds done, and the current fit's epochs with its
    training loss, devel mean Spearman and best epoch so far; both with an ETA. Where the
    console is not a terminal (a log file, CI), one line per finished fit instead."""

    def __init__(self, console: Console, folds: int, epochs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console, self.total, self.done = console, folds, 0
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
        )  # fmt: skip
        self.folds = self.bar.add_task("folds", total=folds, info="")
        self.epochs = self.bar.add_task("epochs", total=epochs, info="")
        self.name, self.info, self.started = "", "", time.monotonic()

    def __enter__(self) -> TrainingProgress:
        self.started = time.monotonic()
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start_fit(self, name: str, epochs: int) -> None:
        self.name, self.info = name, ""
        self.bar.reset(self.epochs, total=epochs, description=f"epochs ({name})", info="")

    def epoch(self, row: dict[str, float]) -> None:
        info = f"loss {row['train_loss']:.4f}"
        if "devel_spearman" in row:
            info += f"  devel rho {row['devel_spearman']:.3f}  best epoch {row['best_epoch']}"
        self.info = f"epoch {row['epoch']}, {info}"
        self.bar.update(self.epochs, completed=row["epoch"], info=info)

    def end_fit(self) -> None:
        self.bar.advance(self.folds)
        self.done += 1
        if not self.console.is_terminal:
            spent = time.monotonic() - self.started
            eta = spent / self.done * (self.total - self.done)
            self.console.print(
                f"fit {self.done}/{self.total} ({self.name}) done: {self.info}; "
                f"{spent / 60:.1f} min so far, about {eta / 60:.0f} min to go",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip
