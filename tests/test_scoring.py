"""Scoring segments the same everywhere (streamer/scoring.py): a tiny real Predictor (random
HuBERT and regressors built here) adapting to each session, and one that does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from support.models import make_bundle

from emomon.model.encoder import load_encoder
from emomon.model.predictor import Predictor
from emomon.model.specs import EncoderSpec
from emomon.streamer.audio.segmenter import Segment
from emomon.streamer.outputs.record import Job
from emomon.streamer.scoring import score


def tone(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def parts(tiny_hubert):
    encoder = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    return encoder, make_bundle(encoder, ("anger", "sadness", "neutral"), arch=3, head="shared", output="softmax")


def jobs(sources: list[str]) -> list[Job]:
    return [Job(src, Segment(tone(i), i, i + 1.0, i)) for i, src in enumerate(sources)]


def test_sessions_stay_apart_when_the_model_adapts(parts) -> None:
    encoder, bundle = parts
    adaptive = replace(bundle, norm_mode="speaker", norm_prior_frames=10)
    mixed = jobs(["a", "a", "b", "a", "b"])
    sessions: set[str] = set()
    together = score(Predictor(adaptive, encoder, "cpu"), mixed, sessions)
    assert sessions == {"a", "b"} and [r.status for r in together] == ["ok"] * 5
    alone = Predictor(adaptive, encoder, "cpu")  # each source on its own, in order: the same shares
    for src in ("a", "b"):
        mine = [j for j in mixed if j.source == src]
        for r, j in zip(score(alone, mine), mine):
            got = next(t for t in together if t.job is j)
            assert r.prediction.shares == pytest.approx(got.prediction.shares, abs=1e-5)
    assert all(r.latency_ms is not None and r.latency_ms >= r.queue_ms >= 0 for r in together)


def test_a_failing_call_gives_error_results_and_the_others_go_on(parts) -> None:
    encoder, bundle = parts
    for mode in ("speaker", "global"):  # one call for all three: the bad one fails alone
        model = Predictor(replace(bundle, norm_mode=mode), encoder, "cpu")
        batch = jobs(["a", "b", "c"])
        batch[1] = replace(batch[1], segment=Segment(np.zeros(0, np.float32), 1.0, 1.0, 1))  # no audio at all
        results = score(model, batch)
        assert [r.status for r in results] == ["ok", "error", "ok"]
        assert results[1].prediction is None and "Segment 0 lasts 0.000 s" in results[1].error
