"""Scoring segments, the same wherever it runs: the inference worker of live, replay and
serve (monitor/worker.py), batch's worker processes (batch/file_scorer.py) and its Ray actors
(batch/ray_engine.py).

`split_by_speaker` cuts each segment where its speaker changes and names every part (the
tracker of model/tracker.py, one per source); `score` runs segments through the model in
one call, each with its normalisation session (a source's, or with speakers each
speaker's in it) when the model adapts to its session, and gives an error result per
segment that fails, so that a run goes on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from .outputs.record import Job, Result

if TYPE_CHECKING:
    from ..model.interface import Engine
    from ..model.tracker import Speakers


def split_by_speaker(speakers: Speakers, jobs: list[Job]) -> list[Job]:
    """Each segment as the parts its speakers spoke (one, unless the turn changed inside),
    named, in the order spoken; each source has its own tracker."""
    labelled = speakers.label([j.source for j in jobs], [j.segment.audio for j in jobs])
    out = []
    for job, parts in zip(jobs, labelled):
        pieces = job.segment.by_speaker(parts)
        out += [replace(job, segment=seg, speaker=name, part=k, last=i == len(pieces) - 1)
                for i, (seg, name, k) in enumerate(pieces)]  # fmt: skip
    return out


def score(
    predictor: Engine, jobs: list[Job], sessions: set[str] | None = None, update_session: bool = True
) -> list[Result]:
    """A result per job, in order: ok with its prediction and latency, or error. The jobs go
    to the model in one call, each with its session's key where the model adapts to its
    session (the engine batches across sessions); a call that fails on a bad segment is
    tried again job by job, so that only that segment's row is an error. The sessions used
    are added to `sessions`, for a caller that ends them when its source ends.
    `update_session=False` (interim results) leaves the sessions' statistics as they were."""
    if sessions is not None:
        sessions.update(j.session for j in jobs)
    started = time.perf_counter()
    try:
        keys = [j.session for j in jobs] if predictor.adapts else None
        predictions = predictor.predict([j.segment.audio for j in jobs], update_session, keys)
    except ValueError as e:  # a segment the model refuses (too short, NaN): find which
        if len(jobs) == 1:
            return [Result(jobs[0], "error", error=str(e) or type(e).__name__)]
        return [r for j in jobs for r in score(predictor, [j], None, update_session)]
    except Exception as e:  # noqa: BLE001 - a dead model process must not end the run
        return [Result(j, "error", error=str(e) or type(e).__name__) for j in jobs]
    done = time.perf_counter()
    return [Result(j, "ok", p, latency_ms=(done - j.ready) * 1e3, queue_ms=(started - j.ready) * 1e3)
            for j, p in zip(jobs, predictions)]  # fmt: skip
