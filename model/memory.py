"""Keeping a scorer's memory flat over hours of speech.

Speech segments come in every length, so a process that scores them for hours sees a new
tensor shape at nearly every call. Two things then grow without a bound:
- oneDNN (PyTorch's CPU kernels) keeps a compiled primitive per shape, 1,024 by default;
- glibc's malloc leaves the freed middle of its heaps to fragment, one heap per thread.
Under tcmalloc with oneDNN's cache at 64 a batch worker's memory stays flat and it runs
faster, as Intel's PyTorch tuning guide recommends (docs/benchmarks.md, "batch").

A process emomon starts to run a model (batch workers, Ray actors, serve's model process)
gets `scorer_env()`: the cache bound and, when the system has it (Debian's
libtcmalloc-minimal4), tcmalloc preloaded. The emomon command bounds its own process
(replay, live, serve without a model process, train) with `bound_this_process()`: the
cache bound and at most two malloc arenas. The library (load_encoder, the Predictor) leaves
a host application's process settings alone. A value already in the environment wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator, Mapping

ONEDNN_CACHE = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}
ARENAS = {"MALLOC_ARENA_MAX": "2"}  # glibc, when tcmalloc is not there
# tcmalloc prints a line for each allocation over 1 GiB; a long segment's attention can be one
TCMALLOC_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def tcmalloc() -> str | None:
    """The tcmalloc library's name for LD_PRELOAD, or None where the system has none."""
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def scorer_env(environ: Mapping[str, str] = os.environ, preload: bool = True) -> dict[str, str]:
    """The variables to add to a new scoring process's environment (none that `environ` sets).
    `preload=False` where the process may run on another machine, whose libraries are unknown."""
    extra = dict(ONEDNN_CACHE)
    lib = tcmalloc() if preload else None
    if lib and "LD_PRELOAD" not in environ:
        extra.update(LD_PRELOAD=lib, **TCMALLOC_QUIET)
    else:
        extra.update(ARENAS)
    return {k: v for k, v in extra.items() if k not in environ}


@contextlib.contextmanager
def spawning_scorers() -> Iterator[None]:
    """Processes started inside (multiprocessing's spawn copies os.environ) get scorer_env();
    this process's own environment is as it was afterwards."""
    extra = scorer_env()
    os.environ.update(extra)
    try:
        yield
    finally:
        for key in extra:
            os.environ.pop(key, None)


def bound_this_process() -> None:
    """The bounds for a model loaded in this process: oneDNN reads its variable at its first
    primitive; glibc reads MALLOC_ARENA_MAX only at start-up, so it goes in through mallopt(),
    before torch starts its threads."""
    for key, value in {**ONEDNN_CACHE, **ARENAS}.items():
        os.environ.setdefault(key, value)
    with contextlib.suppress(OSError, AttributeError, ValueError):  # not glibc: no arena bound
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))
