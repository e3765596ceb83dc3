"""The shipped default bundle: loads offline, carries its evaluation, predicts real speech."""

from __future__ import annotations

import numpy as np

from model.bundle import DEFAULT_BUNDLE, load_bundle
from model.predictor import Predictor
from tests.conftest import load_clip
from training.datasets import EMODB_EMOTIONS


def test_default_bundle_is_small_and_documented() -> None:
    size = sum(f.stat().st_size for f in DEFAULT_BUNDLE.iterdir())
    assert size < 5_000_000
    bundle = load_bundle(DEFAULT_BUNDLE)
    assert bundle.emotions == EMODB_EMOTIONS and bundle.encoder.kind == "egemaps"
    loso = bundle.metrics["loso"]
    assert loso["n"] == 535 and len(loso["per_speaker"]) == 10
    assert 1 / 7 < loso["uar"] <= 1 and 0 < loso["spearman_mean"] <= 1  # better than chance
    assert bundle.provenance["command"].startswith("emomon ")


def test_default_model_tells_anger_from_sadness(emodb_rows) -> None:
    """Real speech through the real path: one speaker's recordings, all emotions, in file
    order as one session. Emo-DB is the model's training data, so this checks the wiring
    (features, speaker-adaptive normalisation, regressors, emotion order), not
    generalisation: that is the leave-one-speaker-out number in bundle.json."""
    rows = [r for r in emodb_rows if r["speaker"] == "03"]
    predictor = Predictor.from_bundle(DEFAULT_BUNDLE, device="cpu")
    predictor.reset_session()
    out = predictor.predict([load_clip(r["file"].split("/")[-1]) for r in rows])
    shares = np.array([list(p.shares.values()) for p in out])
    emotion = np.array([r["emotion"] for r in rows])
    anger, sadness = EMODB_EMOTIONS.index("anger"), EMODB_EMOTIONS.index("sadness")
    assert shares[emotion == "anger", anger].mean() > shares[emotion == "sadness", anger].mean()
    assert shares[emotion == "sadness", sadness].mean() > shares[emotion == "anger", sadness].mean()
    assert np.all(shares.std(0) > 0)  # every emotion's output responds to the audio
