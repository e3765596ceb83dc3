"""The Ray actors of `emomon batch --engine ray` (ray_engine.py): `ScoreActor`, one engine per
actor scoring batches of segment rows, and `StreamScoreActor`, for a bundle that adapts to each
stream, scoring a stream's pieces in order with its sessions' statistics sent along. Both
score through scoring.score, as the local engine does."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .file_scorer import BatchJob


class StreamScoreActor:
    """A Ray actor for a bundle whose normalisation follows the stream: the Predictor, loaded
    once; a piece of one stream in, its segments' shares and the sessions' statistics out."""

    def __init__(self, job: BatchJob) -> None:
        self.job, self.predictor = job, job.load()
        self.emotions = tuple(self.predictor.emotions)

    def score(self, source: str, piece: list[tuple], states: dict[str, np.ndarray]):
        """(shares or None, status, error) per segment of `piece`, in order, and every session's
        statistics after it (scoring.py's score, max_batch segments a call, as the local engine)."""
        from ..audio.segmenter import Segment
        from ..outputs.record import Job
        from ..scoring import score

        jobs = [Job(source, Segment(np.frombuffer(audio, np.float32), start, end, index), speaker=who or None,
                    part=part) for index, part, who, start, end, audio in piece]  # fmt: skip
        for key, state in states.items():
            self.predictor.set_session_state(key, state)
        sessions = set(states)
        results = [r for start in range(0, len(jobs), self.job.max_batch)
                   for r in score(self.predictor, jobs[start : start + self.job.max_batch], sessions)]  # fmt: skip
        after = {key: self.predictor.session_state(key) for key in sessions}
        for key in sessions:
            self.predictor.end_session(key)
        errors = [r.error for r in results if r.status != "ok"]
        error = f"{len(errors)} segment(s) could not be scored ({errors[0]})" if errors else ""
        out = [(np.array([r.prediction.shares[e] for e in self.emotions], np.float32) if r.prediction else None,
                r.status, error if r.status != "ok" else "") for r in results]  # fmt: skip
        return out, after


class ScoreActor:
    """A Ray actor: the Predictor, loaded once; a batch of segment rows in, their shares out.
    The run's Job is a class attribute of a subclass made per run (`scorer_class`), so that
    a restarted actor needs nothing from the object store to come back."""

    job: BatchJob

    def __init__(self) -> None:
        self.predictor = self.job.load()
        self.emotions = tuple(self.predictor.emotions)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..audio.segmenter import Segment
        from ..outputs.record import Job
        from ..scoring import score

        n = len(batch["kind"])
        shares = np.zeros((n, len(self.emotions)), np.float32)
        status = np.array(["file"] * n, dtype=object)
        error = np.array([""] * n, dtype=object)
        todo = [i for i in range(n) if batch["kind"][i] == "segment"]
        jobs = [
            Job(
                os.fsdecode(batch["key"][i]),
                Segment(
                    np.frombuffer(batch["audio"][i], np.float32),
                    float(batch["start_s"][i]),
                    float(batch["end_s"][i]),
                    int(batch["index"][i]),
                ),
            )
            for i in todo
        ]
        for i, r in zip(todo, score(self.predictor, jobs)):  # one call: this actor's bundle does not adapt
            if r.prediction is not None:
                shares[i], status[i] = [r.prediction.shares[e] for e in self.emotions], "ok"
            else:  # as in replay: error rows, the run goes on
                status[i], error[i] = "error", f"{len(todo)} segment(s) could not be scored ({r.error})"
        keep = ("key", "kind", "channel", "index", "part", "speaker", "start_s", "end_s", "info")
        return {**{k: batch[k] for k in keep}, "shares": shares, "status": status, "error": error}


def scorer_class(job: BatchJob) -> type[ScoreActor]:
    return type("ScoreActor", (ScoreActor,), {"job": job})
