"""`emomon batch --engine ray`: a Ray Data pipeline (`pip install 'emomon[ray]'`).

    paths -> flat_map(decode, resample, VAD: one row per segment, then one per file;
                      with --speakers also each segment's speaker: the task sees them in order)  CPU tasks
          -> map_batches(ScoreActor, ray_actors.py: one engine per actor, `max_batch` segments a call)  actor pool
          -> the driver: a file's rows, once all of them are in -> part files (store.py)

A bundle whose normalisation follows the stream needs a stream's segments in order, in a
session of their own. Then the segment task hands them to a scoring actor (StreamScoreActor) in
pieces of at most PIECE_BATCHES model calls, with the session's statistics (a (3, D) array
per session) sent along and returned updated, so any actor can take the next piece and
memory holds a piece, never a whole stream; the task's rows come out scored. Rows equal
the local engine's: the same segments in the same calls, in the same order.

Decoding and the model scale separately: the segment tasks run wherever a CPU is free, the
actors (`--workers`, `--gpus-per-worker`) load the model once each. Ray retries a task
whose worker died and restarts a dead actor, so rows can arrive twice; the driver keys
them by (file, channel, segment), keeps a file until its last segment is in and writes it
with the same atomic parts and ledger as the local engine. A file that fails in a task
(its decoder, its scoring actor) is an error row of that file, not a failed dataset. Ray
Data's own Parquet writer writes blocks, not files, and could not say when a file is
whole, which exactly-once and --resume need.

File paths travel as bytes (os.fsencode): a name that is not UTF-8 is no Arrow string.

Loopback clusters: Ray rewrites 127.0.0.1 to the machine's outward address unless it runs
in its single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which also binds every
server to loopback); emomon sets that for a local instance it starts and for an --address
on loopback. Usage statistics are off (RAY_USAGE_STATS_ENABLED=0).
"""

from __future__ import annotations

import json
import os
import socket
import time
import zlib
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ...model.errors import ConfigError, EmomonError
from ...model.memory import scorer_env
from ..net import is_loopback
from .ray_actors import StreamScoreActor, scorer_class

if TYPE_CHECKING:
    from ...model.tracker import Speakers, SpeakerSettings
    from ..audio.segmenter import Segment
    from .file_scorer import BatchJob
    from .inputs import Item
    from .progress import Progress
    from .store import Store

DECODE_CPUS = 0.25  # a segment task is light next to the model: four share a core's reservation
MIX = -1  # the channel column of mixed audio inside the pipeline (None in the output)
MAX_BLOCKS = 10_000  # a segment task per file up to this many files; beyond, a task takes several
BLOCK_BYTES = 1 << 20  # a segment task hands on its rows at least every MiB of audio (about 16 s), not per file
PIECE_BATCHES = 4  # an adaptive stream goes to its actor this many model calls (max_batch segments each) at a time


def _reachable(address: str) -> None:
    """One sentence, at once, when nothing answers at `address` (Ray itself waits minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address '{address}' is not HOST:PORT (for example 127.0.0.1:6379).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise EmomonError(f"Ray cluster at '{address}' cannot be reached: {e.strerror or e}.") from e


def import_ray(address: str):
    """Ray, set up before its first import: no usage statistics, loopback kept as loopback."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address or is_loopback(address.rsplit(":", 1)[0].strip("[]")):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError("emomon batch --engine ray needs Ray Data: pip install 'emomon[ray]'.") from e
    return ray


_STAGE: dict[Any, Any] = {}  # a Ray worker process's speaker stage, loaded by its first segment task


def speaker_stage(settings: SpeakerSettings) -> Speakers:
    """The speaker encoder and tracker of --speakers, once per Ray worker process, on one
    torch thread (a segment task holds a quarter of a core)."""
    if settings not in _STAGE:
        import torch

        from ...model.tracker import Speakers

        torch.set_num_threads(1)
        _STAGE.clear()
        _STAGE[settings] = Speakers(settings)
    return _STAGE[settings]


def cut_rows(
    row: dict[str, Any],
    vad,
    each: bool,
    speakers: SpeakerSettings | None = None,
    batch: int = 1,
    scorers: list | None = None,
    width: int = 0,
) -> Any:
    """A Ray task: one file into segment rows (audio as float32 bytes), then one file row with
    its duration, rate, channels, SHA-256, row count and error, if any. With --speakers the
    task names each segment's speaker: it alone sees the file's segments in order, `batch` at
    a time per stream, and a segment cut at a turn change gives a row per part. With
    `scorers` (actors of a bundle whose normalisation follows the stream) each stream's
    segments are scored here, piece by piece (Pieces), and the rows come out scored."""
    from ...model.errors import AudioError
    from .file_scorer import cut, jobs_of, open_file, session_key
    from .inputs import Item

    item = Item(os.fsdecode(row["key"]), os.fsdecode(row["source"]), int(row["size"]))
    base = {"key": row["key"], "channel": MIX, "index": -1, "part": 0, "speaker": "", "start_s": 0.0, "end_s": 0.0,
            "audio": b""}  # fmt: skip
    if scorers:  # the rows come out scored: every row has the scores' columns
        base.update(shares=np.zeros(width, np.float32), status="file", error="")
    try:
        source, info = open_file(item, each)
    except AudioError as e:
        yield {**base, "kind": "file", "info": json.dumps({"error": str(e), "segments": 0})}
        return
    stage = speaker_stage(speakers) if speakers is not None else None
    pieces = Pieces(scorers, item, batch, base) if scorers else None
    pending: dict[int | None, list[Segment]] = {}
    n, error = 0, ""

    def rows(channel: int | None, segs: list[Segment]) -> Any:
        for job in jobs_of(stage, item, channel, segs):
            if pieces is not None:
                yield from pieces.add(channel, job)
                continue
            yield segment_row(base, channel, job, audio=job.segment.audio.tobytes())
        segs.clear()

    try:
        try:
            for channel, seg in cut(source, vad, each):
                waiting = pending.setdefault(channel, [])
                waiting.append(seg)
                if len(waiting) >= (batch if stage else 1):
                    for r in rows(channel, waiting):
                        n += 1
                        yield r
        except AudioError as e:  # the file broke off: what came before it is kept
            error = str(e)
        for channel, waiting in pending.items():
            for r in rows(channel, waiting):
                n += 1
                yield r
        for r in pieces.finish() if pieces is not None else ():
            n += 1
            yield r
    except Exception as e:  # noqa: BLE001 - anything else that fails here is this file's error, not the run's
        error = error or f"Audio file '{item.source}' failed in a segment task: {type(e).__name__}: {e}"
    finally:
        if stage is not None:
            for channel in pending:
                stage.forget(session_key(item, channel))
    yield {**base, "kind": "file", "info": json.dumps({**info, "error": error, "segments": n})}


def segment_row(base: dict[str, Any], channel: int | None, job, **fields: Any) -> dict[str, Any]:
    """A segment task's row of one job (its place in the file; `fields`: its audio, or its scores)."""
    seg = job.segment
    return {**base, "kind": "segment", "channel": MIX if channel is None else channel, "index": seg.index,
            "part": job.part, "speaker": job.speaker or "", "start_s": seg.start_s, "end_s": seg.end_s, "info": "",
            **fields}  # fmt: skip


class Pieces:
    """A file's streams on their way to a scoring actor: each stream's jobs gather into a
    piece of PIECE_BATCHES x `batch` segments, which goes to the file's actor with the
    stream's session statistics and comes back scored, with the statistics for the next.
    A piece is sent before the previous one's rows are taken, so decoding the next piece
    overlaps with scoring this one; each stream has at most one piece at the actor."""

    def __init__(self, scorers: list, item: Item, batch: int, base: dict[str, Any]) -> None:
        self.actor = scorers[zlib.crc32(os.fsencode(item.key)) % len(scorers)]
        self.size, self.base, self.key = PIECE_BATCHES * batch, base, item.key
        self.jobs: dict[int | None, list] = {}
        self.states: dict[int | None, dict[str, np.ndarray]] = {}
        self.sent: dict[int | None, tuple[Any, list]] = {}  # channel -> (the actor's answer to come, its jobs)

    def add(self, channel: int | None, job) -> Any:
        waiting = self.jobs.setdefault(channel, [])
        waiting.append(job)
        if len(waiting) >= self.size:
            yield from self._send(channel)

    def finish(self) -> Any:
        for channel in list(self.jobs):
            yield from self._send(channel)
            yield from self._take(channel)

    def _send(self, channel: int | None) -> Any:
        """The rows of the stream's piece at the actor (its statistics are needed next), then this piece."""
        yield from self._take(channel)
        jobs, self.jobs[channel] = self.jobs[channel], []
        if not jobs:
            return
        piece = [(j.segment.index, j.part, j.speaker or "", j.segment.start_s, j.segment.end_s,
                  j.segment.audio.tobytes()) for j in jobs]  # fmt: skip
        source = f"{self.key}#{MIX if channel is None else channel}"
        self.sent[channel] = (self.actor.score.remote(source, piece, self.states.get(channel, {})), jobs)

    def _take(self, channel: int | None) -> Any:
        import ray

        if channel not in self.sent:
            return
        answer, jobs = self.sent.pop(channel)
        try:
            scored, self.states[channel] = ray.get(answer)
        except Exception as e:  # noqa: BLE001 - a dead actor or a failed call: these segments fail, the file goes on
            why = f"{len(jobs)} segment(s) could not be scored ({type(e).__name__}: {str(e).splitlines()[0]})"
            scored = [(None, "error", why)] * len(jobs)
        for j, (shares, status, error) in zip(jobs, scored):
            yield segment_row(self.base, channel, j, shares=self.base["shares"] if shares is None else shares,
                              status=status, error=error)  # fmt: skip


class Assembler:
    """The driver's side: rows by file until a file is whole, then its rows and record."""

    def __init__(self, job: BatchJob, items: list[Item], emotions: tuple[str, ...]) -> None:
        self.job, self.emotions = job, emotions
        self.items = {it.key: it for it in items}
        self.partial: dict[str, dict[str, Any]] = {}
        self.whole: set[str] = set()

    def add(self, batch: dict[str, np.ndarray]) -> list[tuple[Item, list[dict[str, Any]], dict[str, Any]]]:
        done = []
        for i in range(len(batch["kind"])):
            key = os.fsdecode(batch["key"][i])
            if key in self.whole:
                continue  # a retried task's repeat
            f = self.partial.setdefault(key, {"rows": {}, "info": None})
            if batch["kind"][i] == "file":
                f["info"] = json.loads(batch["info"][i])
            else:
                f["rows"][(int(batch["channel"][i]), int(batch["index"][i]), int(batch["part"][i]))] = (
                    float(batch["start_s"][i]), float(batch["end_s"][i]), batch["shares"][i].copy(),
                    str(batch["status"][i]), str(batch["error"][i]), str(batch["speaker"][i]) or None,
                )  # fmt: skip
            if f["info"] is not None and len(f["rows"]) == f["info"]["segments"]:
                done.append(self._whole(key, self.partial.pop(key)))
        return done

    def _whole(self, key: str, f: dict[str, Any]) -> tuple[Item, list[dict[str, Any]], dict[str, Any]]:
        from .file_scorer import ROW_FILE_INFO, close_record, new_record, row_of

        self.whole.add(key)
        item, info = self.items[key], f["info"]
        record = new_record(item)
        record.update({k: info[k] for k in ("file_duration_s", "sample_rate", "channels", "sha256") if k in info})
        failed = [info["error"]] if info["error"] else []
        rows = []
        for (channel, index, part), (start, end, shares, status, error, who) in sorted(f["rows"].items()):
            ch = None if channel == MIX else channel
            values = dict(zip(self.emotions, map(float, shares))) if status == "ok" else None
            info = {k: record[k] for k in ROW_FILE_INFO}
            row = row_of(item, self.job.run, self.emotions, ch, (index, start, end), values, status, who, part)
            rows.append({**row, **info, **item.extra})
            if error and error not in failed:
                failed.insert(0, error)
        return item, rows, close_record(record, len(rows), failed)


class RayEngine:
    job: BatchJob  # set by the driver once the output folder is open

    def __init__(self, workers: int, address: str, gpus_per_worker: float) -> None:
        self.workers, self.address, self.gpus = workers, address, gpus_per_worker
        self.described: dict[str, Any] = {}
        self.ray: Any = None

    def check(self):
        """Ray, importable, and the cluster at --address answering: one sentence if not, before
        the output folder is touched. Ray's C++ log lines on stderr only with -v."""
        import logging

        if not logging.getLogger("emomon").isEnabledFor(logging.INFO):
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        if self.address and self.address != "auto":
            _reachable(self.address)
        self.ray = import_ray(self.address)
        return self.ray

    def run(self, items: list[Item], store: Store, progress: Progress) -> bool:
        """Score `items` on Ray; True when all were done, False when stopped (Ctrl-C, SIGTERM)."""
        import logging

        from .store import PartWriter

        ray = self.ray or self.check()
        level = logging.ERROR
        if logging.getLogger("emomon").isEnabledFor(logging.INFO):
            level = logging.WARNING  # Ray's own notes only with -v
        try:
            # tcmalloc only on a local instance: a cluster's other nodes may not have it
            env = {"env_vars": scorer_env(preload=not self.address)}
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level=level, runtime_env=env)
            else:
                ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=level,
                         runtime_env=env)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"at '{self.address}'" if self.address else "on this machine"
            raise EmomonError(f"Ray cannot start or join a cluster {where}: {str(e).splitlines()[0]}.") from e
        if level == logging.ERROR:
            import warnings

            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.ERROR)
            warnings.filterwarnings("ignore", module=r"ray\.")
        from .local import StopSignals

        with StopSignals() as signals:
            try:
                cpus = float(ray.cluster_resources().get("CPU", 1))
                self.described = {"engine": "ray", "actors": self.workers, "cluster_cpus": cpus,
                                  "gpus_per_actor": self.gpus}  # fmt: skip
                ctx = ray.data.DataContext.get_current()
                ctx.enable_progress_bars = False
                ctx.print_on_execution_start = False
                ctx.target_max_block_size = BLOCK_BYTES  # segments go on to the actors every few seconds of audio
                assembler = Assembler(self.job, items, self.job.emotions)
                writer = PartWriter(self.job.out, self.job.schema, "ray")
                table = [{"key": os.fsencode(it.key), "source": os.fsencode(it.source), "size": it.size}
                         for it in items]  # fmt: skip
                ds = ray.data.from_items(table, override_num_blocks=max(1, min(len(table), MAX_BLOCKS)))
                actor_cpus = max(0.5, min(float(self.job.threads), cpus / max(1, self.workers) - DECODE_CPUS))
                actors = max(1, min(self.workers, len(items)))
                scorers = None
                if self.job.adapts:  # streams scored in order, piece by piece, by actors of emomon's own
                    # a dead actor is restarted and its piece sent again: the statistics travel with
                    # each piece, so a new actor gives what the old one would have
                    remote = ray.remote(StreamScoreActor).options(num_cpus=actor_cpus, num_gpus=self.gpus or 0,
                                                             max_restarts=2, max_task_retries=2)  # fmt: skip
                    scorers = [remote.remote(self.job) for _ in range(actors)]
                cut = partial(cut_rows, vad=self.job.vad, each=self.job.each, speakers=self.job.speakers,
                              batch=self.job.max_batch, scorers=scorers, width=len(self.job.emotions))  # fmt: skip
                ds = ds.flat_map(cut, num_cpus=DECODE_CPUS)
                if scorers is None:
                    pool = ray.data.ActorPoolStrategy(size=actors)
                    ds = ds.map_batches(scorer_class(self.job), batch_size=self.job.max_batch, batch_format="numpy",
                                        compute=pool, num_cpus=actor_cpus, num_gpus=self.gpus or None)  # fmt: skip
                rows: list[dict[str, Any]] = []
                records: list[dict[str, Any]] = []
                last = time.monotonic()
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for item, file_rows, record in assembler.add(batch):
                        rows += file_rows
                        records.append(record)
                        progress.file_done(item.size, record["file_duration_s"] or 0.0, len(file_rows), record["error"])
                    if records and time.monotonic() - last >= self.job.part_s:
                        writer.commit(rows, records)
                        rows, records, last = [], [], time.monotonic()
                    if signals.asked:
                        break
                writer.commit(rows, records)
                return not signals.asked
            finally:
                ray.shutdown()
