"""Feature normalisation: global, and speaker-adaptive with exact running statistics."""

from __future__ import annotations

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
