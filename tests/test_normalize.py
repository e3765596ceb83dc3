"""Feature normalisation: global, and speaker-adaptive with exact running statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emomon.model.normalize import FeatureNorm, feature_stats, frame_sums, per_speaker_standardise, stats_from_sums


def test_running_statistics_equal_batch_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(500, 4, generator=g) * torch.tensor([1.0, 2.0, 0.5, 10.0]) + 3
    norm = FeatureNorm([0.0] * 4, [1.0] * 4, "speaker", prior_frames=0)
    for chunk in frames.split([7, 100, 1, 392]):
        norm.update(chunk)
    assert torch.allclose(norm.mean.float(), frames.mean(0), atol=1e-5)
    assert torch.allclose(norm.std.float(), frames.std(0, correction=0), atol=1e-5)


def test_prior_weighs_as_many_frames_as_it_says() -> None:
    norm = FeatureNorm([0.0], [1.0], "speaker", prior_frames=100)
    norm.update(torch.full((100, 1), 2.0))
    assert float(norm.mean) == 1.0  # half prior (mean 0), half data (mean 2)
    assert abs(float(norm.std) ** 2 - (0.5 * 1 + 0.5 * 0 + 0.25 * 4)) < 1e-9  # pooled variance
    norm.reset()
    assert float(norm.mean) == 0.0 and float(norm.std) == 1.0


def test_global_mode_never_moves_and_keeps_padding_zero() -> None:
    norm = FeatureNorm([1.0, 2.0], [2.0, 4.0], "global")
    x = torch.ones(2, 5, 2) * 3
    n = torch.tensor([5, 2])
    y = norm(x, n)
    assert torch.allclose(y[0], torch.tensor([1.0, 0.25]).expand(5, 2))
    assert y[1, 2:].abs().sum() == 0
    assert float(norm.mean[0]) == 1.0  # unchanged by what it saw


def test_speaker_mode_adapts_to_a_shifted_voice() -> None:
    norm = FeatureNorm([0.0], [1.0], "speaker", prior_frames=50)
    voice = torch.randn(1, 400, 1, generator=torch.Generator().manual_seed(1)) * 0.5 + 5  # another level
    first = norm(voice[:, :100], torch.tensor([100]))
    later = norm(voice[:, 100:], torch.tensor([300]))
    assert first.mean() > later.mean() > -0.5  # the offset shrinks as the statistics adapt
    assert abs(float(later.mean())) < 1.0


def test_per_speaker_standardise_zero_mean_unit_std_per_speaker() -> None:
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(30, 3, generator=g) + k for k in (0, 0, 5, 5)]
    out = per_speaker_standardise(feats, ["a", "a", "b", "b"])
    for idx in ([0, 1], [2, 3]):
        frames = torch.cat([out[i] for i in idx])
        assert torch.allclose(frames.mean(0), torch.zeros(3), atol=1e-5)
        assert torch.allclose(frames.std(0, correction=0), torch.ones(3), atol=1e-4)


def test_speaker_mode_batch_equals_one_by_one() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 2, generator=g) + 4
    n = torch.tensor([40, 25, 10])
    batched = FeatureNorm([0.0, 0.0], [1.0, 1.0], "speaker", prior_frames=20)(x, n)
    one = FeatureNorm([0.0, 0.0], [1.0, 1.0], "speaker", prior_frames=20)
    for i in range(3):
        alone = one(x[i : i + 1, : n[i]], n[i : i + 1])[0]
        assert torch.allclose(alone, batched[i, : n[i]], atol=1e-6)
    assert batched[1, 25:].abs().sum() == 0


def test_statistics_from_per_file_sums_equal_those_over_the_frames() -> None:
    g = torch.Generator().manual_seed(1)
    files = [torch.randn(t, 5, generator=g) * torch.tensor([1.0, 3.0, 0.1, 1e-7, 8.0]) + 2 for t in (1, 40, 7, 300)]
    mean, std = feature_stats(files)
    m2, s2 = stats_from_sums(torch.stack([frame_sums(f) for f in files]))
    assert torch.allclose(m2, mean, atol=1e-5) and torch.allclose(s2, std, rtol=1e-4)
    assert s2[3] == std[3]  # a (nearly) constant dimension is clamped the same way


@pytest.mark.parametrize("cap", [0, 25])
def test_session_stats_from_frame_sums_equal_the_running_normalisation(cap: int) -> None:
    """The pooled path's statistics for each clip of a session (from frame sums alone) are
    the ones FeatureNorm standardises that clip with, fed the clips in order."""
    from emomon.model.normalize import frame_sums, session_stats

    g = torch.Generator().manual_seed(3)
    clips = [torch.randn(n, 3, generator=g) * 2 + 1 for n in (7, 12, 5, 30)]
    norm = FeatureNorm([0.5, -0.5, 0.0], [1.5, 0.7, 1.0], "speaker", prior_frames=20, session_frames=cap)
    mean, std = session_stats(torch.stack([frame_sums(c) for c in clips]), norm.prior_mean, norm.prior_var, 20, cap)
    for i, c in enumerate(clips):
        norm(c[None], torch.tensor([len(c)]))  # folds clip i in, as the Predictor does
        assert torch.allclose(mean[i], norm.mean.float(), atol=1e-5) and torch.allclose(
            std[i], norm.std.float(), atol=1e-5
        )


def test_pooled_adaptive_prediction_equals_the_frames_path() -> None:
    """Architecture 3 under "corpus" (or "speaker") normalisation: standardising each
    clip's pooled statistics by its session's running statistics gives what the Predictor
    gives on the frames."""
    from emomon.model.bundle import new_bank
    from emomon.model.normalize import frame_sums
    from emomon.model.regressor import pool_each
    from emomon.model.specs import RegressorSpec
    from emomon.training.sessions import pooled_predict, sessions_predict
    from emomon.training.train import FitResult

    spec = RegressorSpec.paper(
        arch=3, head="shared", pooling=("mean", "std", "p10", "p90"), ff_dims=(6,), output="softmax"
    )
    torch.manual_seed(0)
    bank = new_bank(spec, ("a", "b", "c"), 4).eval()
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(n, 4, generator=g) + k for k, n in enumerate((9, 14, 6, 20, 11))]
    units = ["x", "y", "x", "x", "y"]
    norm = FeatureNorm([0.2] * 4, [1.3] * 4, "corpus", prior_frames=15, session_frames=0)
    r = FitResult(bank, 1)
    pooled = pooled_predict(r, norm, pool_each(clips, spec.pooling), torch.stack([frame_sums(c) for c in clips]), units)
    frames = sessions_predict(r, norm, units, clips)
    assert np.allclose(pooled, frames, atol=1e-5) and not np.allclose(pooled[0], pooled[2], atol=1e-3)
