"""The paper's regressors: fused bank == separate models, masking, attention, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emomon.model.regressor import Regressor, RegressorBank, normalise_pooled, pool_statistics, pooled_lengths
from emomon.model.specs import RegressorSpec

SMALL = dict(conv_channels=(16, 12, 8), lstm_hidden=10, ff_dims=(8, 6, 4))


def batch(B: int, T: int, D: int, lengths: list[int], K: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (B, K, T, D) if K else (B, T, D)
    x = torch.randn(shape, generator=g)
    n = torch.tensor(lengths)
    valid = torch.arange(T)[None, :] < n[:, None]  # (B, T)
    x = x * (valid[:, None, :, None] if K else valid[:, :, None])  # features are padded with zeros
    return x, n


@pytest.mark.parametrize("arch", [1, 2])
@pytest.mark.parametrize("mixed", [0, 3])
def test_bank_equals_separate_regressors(arch: int, mixed: int) -> None:
    torch.manual_seed(arch + mixed)
    regs = [Regressor(RegressorSpec.paper(arch=arch, **SMALL), 5, 1, mixed).eval() for _ in range(9)]
    bank = RegressorBank.from_regressors(regs).eval()
    x, n = batch(4, 23, 5, [23, 17, 6, 11], K=mixed)
    with torch.no_grad():
        y, attn = bank(x, n)
        ref = [r(x, n) for r in regs]
    assert y.shape == (4, 9)
    assert y.abs().max() > 1e-3, "a trivially zero output would make the comparison empty"
    assert (y - torch.cat([r[0] for r in ref], 1)).abs().max() <= 1e-5
    if arch == 2:
        assert attn.shape == (4, 9, 11)
        assert (attn - torch.stack([r[1] for r in ref], 1)).abs().max() <= 1e-5
    else:
        assert attn is None


POOLED = dict(arch=3, pooling=("mean", "std", "min", "max", "p10", "p50", "p90"), ff_dims=(8, 6))


@pytest.mark.parametrize("mixed", [0, 3])
def test_pooled_bank_equals_separate_regressors(mixed: int) -> None:
    torch.manual_seed(mixed)
    regs = [Regressor(RegressorSpec.paper(**POOLED), 5, 1, mixed).eval() for _ in range(4)]
    bank = RegressorBank.from_regressors(regs).eval()
    x, n = batch(4, 23, 5, [23, 17, 6, 1], K=mixed)
    with torch.no_grad():
        y, attn = bank(x, n)
        ref = torch.cat([r(x, n)[0] for r in regs], 1)
    assert attn is None and y.shape == (4, 4) and y.abs().max() > 1e-3
    assert (y - ref).abs().max() <= 1e-5
    # alone == inside the padded batch
    with torch.no_grad():
        alone = bank(x[2:3, ..., :6, :], n[2:3])[0]
    assert (alone - y[2:3]).abs().max() <= 1e-5


ATTENTIVE = dict(arch=3, pooling=("amean", "astd", "p50"), ff_dims=(8, 6), attention_dim=7)


@pytest.mark.parametrize("mixed", [0, 3])
def test_attentive_pooling_bank_equals_separate_regressors(mixed: int) -> None:
    torch.manual_seed(10 + mixed)
    regs = [Regressor(RegressorSpec.paper(**ATTENTIVE), 5, 1, mixed).eval() for _ in range(3)]
    bank = RegressorBank.from_regressors(regs).eval()
    x, n = batch(4, 23, 5, [23, 17, 6, 1], K=mixed)
    with torch.no_grad():
        y, attn = bank(x, n)
        ref = [r(x, n) for r in regs]
    assert y.shape == (4, 3) and y.abs().max() > 1e-3
    assert (y - torch.cat([r[0] for r in ref], 1)).abs().max() <= 1e-5
    assert attn.shape == (4, 3, 23)  # one weight per encoder frame: no MaxPool before it
    assert torch.allclose(attn, torch.stack([r[1] for r in ref], 1), atol=1e-6)
    assert torch.allclose(attn.sum(-1), torch.ones(4, 3), atol=1e-5)
    assert attn[2, :, 6:].abs().sum() == 0 and torch.allclose(attn[3, :, 0], torch.ones(3))
    assert attn[0].std() > 0  # frames are weighed, not averaged
    with torch.no_grad():  # alone == inside the padded batch
        alone, a_alone = bank(x[2:3, ..., :6, :], n[2:3])
    assert (alone - y[2:3]).abs().max() <= 1e-5 and torch.allclose(a_alone[0], attn[2, :, :6], atol=1e-6)


def test_attentive_statistics_are_the_weighted_mean_and_std() -> None:
    x, n = batch(2, 9, 4, [9, 5])
    w = torch.rand(2, 9) * (torch.arange(9)[None] < n[:, None])
    w = w / w.sum(1, keepdim=True)
    got = pool_statistics(x, n, ("amean", "astd"), w).view(2, 2, 4)
    for b in range(2):
        real, wb = x[b, : n[b]].double().numpy(), w[b, : n[b]].double().numpy()
        mean = (wb[:, None] * real).sum(0)
        assert np.allclose(got[b, 0].numpy(), mean, atol=1e-5)
        assert np.allclose(got[b, 1].numpy(), np.sqrt((wb[:, None] * (real - mean) ** 2).sum(0) + 1e-6), atol=1e-5)
    uniform = (torch.arange(9)[None] < n[:, None]) / n[:, None]  # equal weights: the plain statistics
    assert torch.allclose(
        pool_statistics(x, n, ("amean", "astd"), uniform), pool_statistics(x, n, ("mean", "std")), atol=1e-5
    )
    with pytest.raises(ValueError, match="needs attention weights"):
        pool_statistics(x, n, ("amean",))


def test_pool_statistics_match_numpy() -> None:
    x, n = batch(3, 20, 4, [20, 7, 2])
    stats = ("mean", "std", "min", "max", "p0", "p10", "p50", "p90", "p100")
    got = pool_statistics(x, n, stats).view(3, len(stats), 4)
    for b in range(3):
        real = x[b, : n[b]].double().numpy()
        want = [real.mean(0), real.std(0), real.min(0), real.max(0)]
        want += [np.percentile(real, q, axis=0) for q in (0, 10, 50, 90, 100)]
        assert np.allclose(got[b].numpy(), np.stack(want), atol=1e-3), b


def test_softmax_output_is_a_distribution_over_every_emotion() -> None:
    for head_models, out in ((5, 1), (1, 5)):  # per-emotion models, or one shared head
        bank = RegressorBank(RegressorSpec.paper(output="softmax", **POOLED), 4, head_models, out).eval()
        x, n = batch(3, 10, 4, [10, 5, 3])
        with torch.no_grad():
            y, _ = bank(x, n)
        assert y.shape == (3, 5) and torch.allclose(y.sum(1), torch.ones(3)) and (y > 0).all()


def test_bank_round_trips_through_regressors() -> None:
    bank = RegressorBank(RegressorSpec.paper(**SMALL), 5, 3).eval()
    again = RegressorBank.from_regressors([bank.regressor(m) for m in range(3)])
    for (name, a), (_, b) in zip(bank.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_models_start_from_different_weights() -> None:
    bank = RegressorBank(RegressorSpec.paper(**SMALL), 5, 3)
    w = bank.convs__0__weight
    assert not torch.equal(w[0], w[1])


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=2, max_value=40), min_size=1, max_size=5),
    arch=st.sampled_from([1, 2]),
    extra=st.integers(min_value=0, max_value=9),
)
def test_segment_alone_equals_segment_in_padded_batch(lengths: list[int], arch: int, extra: int) -> None:
    torch.manual_seed(0)
    bank = RegressorBank(RegressorSpec.paper(arch=arch, **SMALL), 5, 4).eval()
    T = max(lengths) + extra  # padding beyond the longest segment changes nothing either
    x, n = batch(len(lengths), T, 5, lengths, seed=len(lengths))
    with torch.no_grad():
        y, attn = bank(x, n)
        for i, L in enumerate(lengths):
            yi, ai = bank(x[i : i + 1, :L], n[i : i + 1])
            assert (yi - y[i : i + 1]).abs().max() <= 1e-5
            if arch == 2:
                Lp = L // 2
                assert torch.allclose(ai[0], attn[i, :, :Lp], atol=1e-6)
                assert attn[i, :, Lp:].abs().sum() == 0  # no weight on padding
                assert torch.allclose(attn[i].sum(-1), torch.ones(4), atol=1e-5)


def test_architecture2_output_is_non_negative_and_shared_head_has_one_model() -> None:
    spec = RegressorSpec.paper(arch=2, head="shared", **SMALL)
    bank = RegressorBank(spec, 5, n_models=1, out_dim=9).eval()
    x, n = batch(3, 20, 5, [20, 9, 14])
    with torch.no_grad():
        y, attn = bank(x, n)
    assert y.shape == (3, 9) and attn.shape == (3, 1, 10)
    assert (y >= 0).all()


def test_each_model_trains_only_on_its_own_loss() -> None:
    bank = RegressorBank(RegressorSpec.paper(arch=2, **SMALL), 5, 3)
    x, n = batch(2, 12, 5, [12, 7])
    y, _ = bank(x, n)
    y[:, 1].sum().backward()
    for name, p in bank.named_parameters():
        if p.grad is None:
            continue
        assert p.grad[0].abs().max() == 0 and p.grad[2].abs().max() == 0, name
    assert bank.lstm__weight_hh_l0.grad[1].abs().max() > 0


def test_pooled_lengths_halve_and_never_reach_zero() -> None:
    assert pooled_lengths(torch.tensor([1, 2, 3, 150, 151])).tolist() == [1, 1, 1, 75, 75]


@pytest.mark.parametrize("bad", [dict(kernel_size=4), dict(conv_channels=()), dict(lstm_hidden=0)])
def test_spec_rejects_impossible_shapes(bad: dict) -> None:
    with pytest.raises(ValueError):
        RegressorSpec.paper(**bad)


def test_dropout_only_in_training_mode() -> None:
    bank = RegressorBank(RegressorSpec.paper(arch=2, dropout=0.5, **SMALL), 5, 3)
    x, n = batch(2, 12, 5, [12, 7])
    bank.train()
    assert not torch.equal(bank(x, n)[0], bank(x, n)[0])
    bank.eval()
    with torch.no_grad():
        assert torch.equal(bank(x, n)[0], bank(x, n)[0])
    with pytest.raises(ValueError):
        RegressorSpec.paper(dropout=1.0)


def test_pooled_head_from_precomputed_statistics_equals_the_forward() -> None:
    bank = RegressorBank(RegressorSpec.paper(**POOLED), 5, 3).eval()
    x, n = batch(4, 23, 5, [23, 17, 6, 1])
    with torch.no_grad():
        whole = bank(x, n)[0]
        stats = torch.cat([pool_statistics(x[i : i + 1, : n[i]], n[i : i + 1], POOLED["pooling"]) for i in range(4)])
        assert torch.allclose(bank.head(stats), whole, atol=1e-6)


def test_pooled_statistics_follow_a_standardisation() -> None:
    """Training pools each file once and standardises the statistics per fold: that must
    equal pooling the standardised frames, for every statistic (std scales, not shifts)."""
    x, n = batch(3, 30, 6, [30, 11, 1])
    x = x * torch.tensor([5.0, 0.01, 1.0, 2.0, 30.0, 0.5]) + 3.0  # dimensions of very different scales
    mean, std = torch.randn(6), torch.rand(6) * 4 + 0.01
    stats = POOLED["pooling"]
    valid = (torch.arange(30)[None, :] < n[:, None])[:, :, None]
    direct = pool_statistics((x - mean) / std * valid, n, stats)
    via = normalise_pooled(pool_statistics(x * valid, n, stats), mean, std, stats)
    assert torch.allclose(via, direct, rtol=1e-4, atol=1e-4)


def test_ensemble_is_the_mean_of_its_members() -> None:
    """A shared head of K members: each member is a stock regressor with its own softmax;
    the bank's shares are their mean, and `members` gives each member's own."""
    torch.manual_seed(4)
    spec = RegressorSpec.paper(
        arch=3, head="shared", output="softmax", ensemble=3, pooling=("mean", "std"), ff_dims=(6,)
    )
    regs = [Regressor(spec, 5, 4).eval() for _ in range(3)]
    bank = RegressorBank.from_regressors(regs).eval()
    x, n = batch(4, 12, 5, [12, 9, 4, 2])
    with torch.no_grad():
        y, _ = bank(x, n)
        each, _ = bank(x, n, members=True)
        ref = torch.stack([r(x, n)[0] for r in regs], 1)  # (B, K, E)
    assert y.shape == (4, 4) and each.shape == (4, 3, 4) and bank.n_outputs == 4
    assert torch.allclose(each, ref, atol=1e-6) and torch.allclose(y, ref.mean(1), atol=1e-6)
    assert torch.allclose(y.sum(1), torch.ones(4), atol=1e-5) and (each[:, 0] - each[:, 1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="only with head = 'shared'"):
        RegressorSpec.paper(arch=3, ensemble=2)
