"""Files that several processes share: written whole or not at all, and one writer at a time.

`write_atomic` writes a hidden temporary file with a unique name beside the target,
fsyncs it and renames it over the target, so a reader sees the old file or the new one,
never half of one, and two writers never share a temporary file. `exclusive` holds an
advisory lock (flock) on a lock file; the kernel releases it when its holder dies, so a
killed process never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import EmomonError


def write_atomic(path: Path, data: bytes, fail: Callable[[OSError], EmomonError] | None = None) -> None:
    """`data` to `path` whole or not at all. An OSError becomes `fail(e)` (default: one sentence)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if fail is not None:
            raise fail(e) from e
        raise EmomonError(f"'{path}' cannot be written: {e.strerror or e}.") from e


def try_lock(path: Path) -> int | None:
    """An exclusive lock on `path` (created if need be) without waiting: its descriptor, or
    None when another process holds it. Closing the descriptor releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def exclusive(path: Path, what: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the lock on `path` while inside, waiting at most `timeout_s` for another holder."""
    deadline = time.monotonic() + timeout_s
    try:
        while (fd := try_lock(path)) is None:
            if time.monotonic() > deadline:
                raise EmomonError(f"{what} is still locked by another process after {timeout_s:g} s ('{path}').")
            time.sleep(0.1)
    except OSError as e:
        raise EmomonError(f"{what}: the lock file '{path}' cannot be opened: {e.strerror or e}.") from e
    try:
        yield
    finally:
        os.close(fd)
