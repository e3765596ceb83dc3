"""The output folder of `emomon batch`, and the one way anything is written into it.

    DIR/run.json        the run: its id, model identity and settings (what --resume checks)
    DIR/segments/       Parquet dataset: part-*.parquet, one row per speech segment
    DIR/files.parquet   one row per file: status, error, segments, duration, rate, SHA-256
    DIR/errors.csv      path, source, error: every file that could not be scored
    DIR/summary.json    files, audio hours, segments, errors, wall time, throughput, model, settings
    DIR/.lock           held by the run writing the folder (flock): a second run is refused

A part file is written under a hidden temporary name and renamed once whole (readers of
the dataset ignore names starting with a dot), so the folder never holds a partial part.
Each part also records, in its Parquet metadata, every file whose rows it holds (with the
files that gave no segment and the files that failed): a file is done exactly when a part
naming it exists. That ledger is what --resume reads and what files.parquet, errors.csv
and summary.json are made from; there is no second bookkeeping to disagree with it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model import files
from ...model.errors import EmomonError, printable
from ..outputs.csv_log import text_cell
from ..outputs.record import parquet_types

if TYPE_CHECKING:
    import pyarrow as pa

    from .inputs import Item

FORMAT = "emomon-batch"
LEDGER_KEY = b"emomon.files"
LOCK = ".lock"  # hidden: readers of the dataset and of the folder pass over it
FILE_COLUMNS = ("path", "source", "status", "error", "segments", "file_duration_s", "sample_rate", "channels",
                "sha256")  # fmt: skip


def segment_schema(emotions: tuple[str, ...], extra: pa.Schema, speakers: bool = False) -> pa.Schema:
    """The columns of DIR/segments: the segment record (outputs/record.py's table, record p:
    `speaker` with --speakers), the file's duration, rate and SHA-256, then the manifest's
    own columns."""
    import pyarrow as pa

    own = [(name, getattr(pa, kind)()) for name, kind in parquet_types(emotions, speakers)]
    info = [("file_duration_s", pa.float64()), ("sample_rate", pa.int32()), ("sha256", pa.string())]
    return pa.schema([*own, *info, *extra])


def output_columns(emotions: tuple[str, ...], speakers: bool = False) -> set[str]:
    """Every column the output writes of its own (DIR/segments and files.parquet): a
    manifest's columns may not take these names."""
    import pyarrow as pa

    return set(segment_schema(emotions, pa.schema([]), speakers).names) | set(FILE_COLUMNS)


def file_schema(extra: pa.Schema) -> pa.Schema:
    import pyarrow as pa

    types = {"segments": pa.int32(), "file_duration_s": pa.float64(), "sample_rate": pa.int32(),
             "channels": pa.int32()}  # fmt: skip
    return pa.schema([(c, types.get(c, pa.string())) for c in FILE_COLUMNS] + list(extra))


def _text(value: Any) -> Any:
    """A ledger value as the outputs write it: file names that are not UTF-8 with \\xNN escapes
    (model/errors.py: printable; the ledger itself keeps the name as Python reads it)."""
    return printable(value) if isinstance(value, str) else value


def _cannot(path: Path, e: OSError, what: str = "written") -> EmomonError:
    why = e.strerror or str(e)
    return EmomonError(
        f"'{path}' cannot be {what}: {why}; what was already written stays, and --resume goes on from it."
    )


def write_atomic(path: Path, data: bytes) -> None:
    """`data` to `path` whole or not at all (model/files.py), one sentence if that fails."""
    files.write_atomic(path, data, fail=lambda e: _cannot(path, e))


class PartWriter:
    """Commits parts for one worker: rows plus the ledger records of the files they came from."""

    def __init__(self, out: str | Path, schema: pa.Schema, worker: str) -> None:
        self.folder = Path(out) / "segments"
        self.schema, self.worker, self.count = schema, f"{worker}-{uuid.uuid4().hex[:8]}", 0

    def commit(self, rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> Path | None:
        """Write one part (nothing when there is no file to record)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            return None
        schema = self.schema.with_metadata({LEDGER_KEY: json.dumps(records, allow_nan=False).encode()})
        table = pa.Table.from_pylist(rows, schema=schema)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        path = self.folder / f"part-{self.worker}-{self.count:05d}.parquet"
        write_atomic(path, buf.getvalue())
        self.count += 1
        return path


def _lock(out: Path) -> int:
    """DIR/.lock held for the whole run, naming its holder: a second run on the folder (a
    --resume from cron twice) is refused in one sentence instead of writing rows twice."""
    path = out / LOCK
    try:
        fd = files.try_lock(path)
    except OSError as e:
        raise _cannot(path, e, "opened") from e
    if fd is None:
        try:
            holder = path.read_text(encoding="utf-8").strip() or "another process"
        except OSError:
            holder = "another process"
        raise EmomonError(
            f"Output folder '{out}' is in use by another emomon batch ({holder}); wait for it to end, or choose "
            "another folder."
        )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    try:  # who holds it, for the next run's sentence; the lock itself is what counts (a full disk may refuse this)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode())
    except OSError:
        pass
    return fd


class Store:
    """The output folder: opened for a new run or to resume one."""

    def __init__(self, out: Path, run: dict[str, Any], lock: int | None = None) -> None:
        self.out, self.run = out, run
        self.segments = out / "segments"
        self._lock = lock  # the descriptor holding DIR/.lock while this run writes

    @classmethod
    def open(cls, out: str | Path, resume: bool, identity: dict[str, Any], settings: dict[str, Any]) -> Store:
        """A new run in an empty (or new) folder, or with `resume` the run the folder holds,
        refused when its model or settings differ. One sentence for an unwritable folder."""
        out = Path(out)
        meta = out / "run.json"
        if out.exists() and not out.is_dir():
            raise EmomonError(f"Output folder '{out}' is a file, not a folder.")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _cannot(out, e, "created") from e
        lock = _lock(out)
        try:
            return cls._open(out, meta, resume, identity, settings, lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _open(cls, out: Path, meta: Path, resume: bool, identity: dict, settings: dict, lock: int) -> Store:
        started = meta.exists() or any((out / "segments").glob("part-*.parquet"))
        if started and not resume:
            raise EmomonError(
                f"Output folder '{out}' already holds a batch run: add --resume to finish it, or choose another folder."
            )
        if started:
            try:
                run = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise EmomonError(f"'{meta}' cannot be read ({e}); it is needed to resume that run.") from e
            for name, now in (("model", identity), ("settings", settings)):
                if run.get(name) != now:
                    was = run.get(name) or {}
                    diff = next((k for k in sorted(set(now) | set(was)) if now.get(k) != was.get(k)), "?")
                    raise EmomonError(
                        f"Output folder '{out}' was scored with other {name} ({diff}: {was.get(diff)!r} there, "
                        f"{now.get(diff)!r} now); resume it with the same ones, or choose another folder."
                    )
            store = cls(out, run, lock)
            store.clean()
            return store
        now = datetime.now(UTC)
        run = {"format": FORMAT, "format_version": 1, "run": now.strftime("%Y%m%dT%H%M%SZ"),
               "created": now.isoformat(timespec="seconds"), "model": identity, "settings": settings}  # fmt: skip
        try:
            (out / "segments").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _cannot(out, e, "created") from e
        write_atomic(meta, json.dumps(run, indent=2).encode())
        return cls(out, run, lock)

    def close(self) -> None:
        """Let go of the folder's lock (the process ending does as well)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def clean(self) -> None:
        """Remove temporary files a killed writer left behind."""
        for tmp in (*self.segments.glob(".*.tmp"), *self.out.glob(".*.tmp")):
            tmp.unlink(missing_ok=True)

    def ledger(self) -> dict[str, dict[str, Any]]:
        """Every file a committed part records: path -> its record (the first, should one repeat)."""
        import pyarrow.parquet as pq

        done: dict[str, dict[str, Any]] = {}
        for part in sorted(self.segments.glob("part-*.parquet")):
            try:
                meta = pq.read_schema(part).metadata or {}
            except (OSError, ValueError) as e:
                raise EmomonError(
                    f"Part file '{part}' cannot be read ({e}); remove it and run again with --resume."
                ) from e
            for record in json.loads(meta.get(LEDGER_KEY, b"[]")):
                done.setdefault(record["path"], record)
        return done

    def finish(
        self, items: Iterable[Item], extra: pa.Schema, ledger: dict[str, dict[str, Any]], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """files.parquet, errors.csv and summary.json from the `ledger` (and this run's `summary`
        fields); returns the summary."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        extras = {it.key: it.extra for it in items}
        records = list(ledger.values())
        names = extra.names
        rows = [{**{c: _text(r.get(c)) for c in FILE_COLUMNS}, **{n: extras.get(r["path"], {}).get(n) for n in names}}
                for r in records]  # fmt: skip
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=file_schema(extra)), buf)
        write_atomic(self.out / "files.parquet", buf.getvalue())
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(["path", "source", "error"])
        errors = [r for r in records if r["status"] == "error"]
        for r in errors:
            w.writerow([text_cell(r["path"]), text_cell(r["source"]), text_cell(r["error"])])
        write_atomic(self.out / "errors.csv", text.getvalue().encode())
        audio_s = sum(r["file_duration_s"] or 0.0 for r in records)
        out = {
            "run": self.run["run"],
            "files": len(records),
            "errors": len(errors),
            "audio_hours": round(audio_s / 3600, 6),
            "segments": sum(r["segments"] for r in records),
            **summary,
            "model": self.run["model"],
            "settings": self.run["settings"],
        }
        write_atomic(self.out / "summary.json", json.dumps(out, indent=2).encode())
        return out
