"""`emomon batch --engine local`: N worker processes on this machine, no Ray needed.

Each worker loads the Predictor once, takes files from a shared queue (the driver hands
them out largest first, a few ahead), scores them (file_scorer.py) and commits its own part files
(store.py) at least every `part_s` seconds. The driver shows progress and watches the
workers:

- a worker that dies (out of memory, a decoder crash, SIGKILL) is replaced; the files it
  had not committed, read off the ledger on disk rather than trusted from its messages,
  go back to the queue, and a file that has taken down three workers is recorded as an
  error so that the run ends;
- Ctrl-C or SIGTERM: the workers commit the files they finished and stop, and the run
  can be finished with --resume; a second Ctrl-C stops them at once;
- the driver killed outright: the workers die with it (Linux: PR_SET_PDEATHSIG; elsewhere
  they notice between files), leaving only whole parts.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import time
from typing import TYPE_CHECKING, Any

from ...model.errors import EmomonError
from ...model.memory import spawning_scorers

if TYPE_CHECKING:
    from .file_scorer import BatchJob
    from .inputs import Item
    from .progress import Progress
    from .store import Store

MAX_TRIES = 3  # a file that takes down this many workers is an error


class StopSignals:
    """While inside: Ctrl-C or SIGTERM asks the run to stop (`asked`); a second one stops it at
    once (KeyboardInterrupt). The handlers before are put back on the way out."""

    def __init__(self) -> None:
        self.asked = 0

    def _on_signal(self, signum, frame) -> None:
        self.asked += 1
        if self.asked > 1:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when the driver dies."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_main(wid: int, job: BatchJob, tasks, events, stop) -> None:
    """One worker process: load the model, score files until the queue says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    _die_with_parent()
    parent = os.getppid()
    os.environ["OMP_NUM_THREADS"] = str(job.threads)
    from .file_scorer import FileScorer, Stopped, score_file
    from .store import PartWriter

    try:
        predictor, speakers = job.load(), job.speaker_stage()
    except Exception as e:  # noqa: BLE001 - a model that cannot load stops the run: restarting would not help
        why = str(e) if isinstance(e, EmomonError) else f"{type(e).__name__}: {(str(e) or '?').splitlines()[0]}"
        events.put(("fatal", wid, f"Worker {wid} cannot load the model: {why.rstrip('.')}."))
        return
    events.put(("ready", wid, predictor.describe()))
    scorer = FileScorer(predictor, job.run, job.max_batch, speakers)
    writer = PartWriter(job.out, job.schema, f"w{wid}")
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    last = time.monotonic()

    def commit() -> bool:
        nonlocal rows, records, last
        try:
            writer.commit(rows, records)
        except EmomonError as e:
            events.put(("fatal", wid, str(e)))
            return False
        events.put(("committed", wid, [r["path"] for r in records]))
        rows, records, last = [], [], time.monotonic()
        return True

    while not stop.is_set() and os.getppid() == parent:
        try:
            item = tasks.get(timeout=0.5)
        except queue.Empty:
            continue
        if item is None:
            break
        events.put(("start", wid, item.key))
        try:
            result = score_file(item, scorer, job.vad, job.each, stop.is_set)
        except Stopped:
            break
        rows += [{**r, **item.extra} for r in result.rows]
        records.append(result.record)
        events.put(("done", wid, item.key, result.audio_s, len(result.rows), result.record["error"]))
        if time.monotonic() - last >= job.part_s and not commit():
            return
    commit()


class LocalEngine:
    job: BatchJob  # set by the driver once the output folder is open

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.described: dict[str, str] = {}
        self.given_up: set[str] = set()

    def run(self, items: list[Item], store: Store, progress: Progress) -> bool:
        """Score `items`; True when all were done, False when stopped (Ctrl-C, SIGTERM)."""
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork of a process that has threads and torch
        tasks, events, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        by_key = {it.key: it for it in items}
        pending = collections.deque(items)
        tries: collections.Counter[str] = collections.Counter()
        procs: dict[int, Any] = {}
        # worker -> files it took up and has not committed -> their "done" numbers (() while scoring)
        uncommitted: collections.defaultdict[int, dict[str, tuple]] = collections.defaultdict(dict)
        state = {"next": 0, "handed": 0, "sentinels": 0}

        def start() -> None:
            wid = state["next"]
            p = ctx.Process(target=worker_main, args=(wid, self.job, tasks, events, stop), daemon=True,
                            name=f"emomon-batch-{wid}")  # fmt: skip
            with spawning_scorers():
                p.start()
            procs[wid] = p
            state["next"] += 1

        def retry(keys: list[str]) -> None:
            for key in keys:
                tries[key] += 1
                if tries[key] >= MAX_TRIES:
                    self._give_up(by_key[key], progress)
                else:
                    pending.appendleft(by_key[key])

        with StopSignals() as signals:
            interrupted = False
            try:
                for _ in range(min(self.workers, max(1, len(items)))):
                    start()
                while True:
                    alive = [w for w, p in procs.items() if p.is_alive()]
                    while pending and state["handed"] < 2 * len(alive) and not interrupted:
                        tasks.put(pending.popleft())
                        state["handed"] += 1
                    if not pending and state["sentinels"] < len(alive) and not interrupted:
                        for _ in range(len(alive) - state["sentinels"]):
                            tasks.put(None)
                        state["sentinels"] = len(alive)
                    try:
                        event = events.get(timeout=0.2)
                        state["handed"] -= self._on_event(event, uncommitted, by_key, progress)
                    except queue.Empty:
                        pass
                    if signals.asked and not interrupted:
                        interrupted = True
                        progress.console.print(
                            "emomon batch: stopping; the files finished are being committed (Ctrl-C again: at once)"
                        )
                        stop.set()
                    for wid in [w for w, p in procs.items() if not p.is_alive()]:
                        p = procs.pop(wid)
                        lost = self._lost(wid, p, uncommitted.pop(wid, {}), store, progress)
                        retry(lost)
                        if p.exitcode != 0:  # it took no sentinel; the queue is topped up for the rest
                            state["sentinels"] = max(0, state["sentinels"] - 1)
                            if not interrupted and (pending or not tasks.empty()):
                                start()
                    if procs:
                        continue
                    if interrupted:
                        break
                    # Every worker is gone: what the ledger on disk records is done, the rest goes round again.
                    done = store.ledger()
                    missing = [k for k in by_key if k not in done and k not in self.given_up]
                    if not missing:
                        break
                    while not tasks.empty():
                        with contextlib.suppress(queue.Empty):
                            tasks.get_nowait()
                    pending.clear()
                    retry(missing)
                    pending = collections.deque(sorted(pending, key=lambda it: (-it.size, it.key)))
                    state["handed"] = state["sentinels"] = 0
                    for _ in range(min(self.workers, max(1, len(pending)))):
                        start()
            except BaseException:
                stop.set()
                for p in procs.values():
                    p.join(timeout=2)
                    if p.is_alive():
                        p.kill()
                raise
            finally:
                for p in procs.values():
                    p.join(timeout=30)
        return not interrupted

    def _on_event(self, event: tuple, uncommitted, by_key, progress: Progress) -> int:
        """Apply one worker message; returns how many queued files it took up (0 or 1)."""
        kind, wid = event[0], event[1]
        if kind == "fatal":
            raise EmomonError(event[2])
        if kind == "ready":
            self.described = event[2]
        elif kind == "start":
            uncommitted[wid][event[2]] = ()
            return 1
        elif kind == "done":
            key, audio_s, segments, error = event[2:]
            uncommitted[wid][key] = (by_key[key].size, audio_s, segments, error)
            progress.file_done(*uncommitted[wid][key])
        elif kind == "committed":
            for key in event[2]:
                uncommitted[wid].pop(key, None)
        return 0

    def _lost(self, wid: int, p, started: dict[str, tuple], store: Store, progress: Progress) -> list[str]:
        """A worker ended: the files it took up that no committed part records."""
        if not started:
            return []
        done = store.ledger()
        lost = [k for k in started if k not in done]
        for key in lost:
            if started[key]:
                progress.file_done(*started[key], sign=-1)
        if lost:
            progress.console.print(
                f"emomon batch: worker {wid} died (exit code {p.exitcode}); {len(lost)} file(s) go back to the queue",
                markup=False, highlight=False,
            )  # fmt: skip
        return lost

    def _give_up(self, item: Item, progress: Progress) -> None:
        from .file_scorer import new_record
        from .store import PartWriter

        error = f"Audio file '{item.source}' took down {MAX_TRIES} worker processes; it is left out."
        PartWriter(self.job.out, self.job.schema, "driver").commit([], [new_record(item, error)])
        self.given_up.add(item.key)
        progress.file_done(item.size, 0.0, 0, error)
