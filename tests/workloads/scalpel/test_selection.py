"""Gumbel-top-k, its relaxation, and masked top-k."""

from __future__ import annotations

import pytest
import torch

from esper.workloads.scalpel import gumbel_topk, gumbel_topk_blocks, relaxed_topk, topk_among


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [0, 1, 2, 7, 31, 64])
def test_gumbel_topk_keeps_exactly_k_distinct(k: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(64, generator=gen)
    idx = gumbel_topk(scores, k, tau=1.0, generator=gen)
    assert idx.numel() == k and idx.unique().numel() == k
    assert idx.dtype == torch.long and (idx >= 0).all() and (idx < 64).all()


@pytest.mark.parametrize("k", [1, 1000, 50_000])
def test_gumbel_topk_exact_on_large_inputs(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    scores = torch.randn(300, 1000, generator=gen)  # > 2^17 items: the sampled-bound path
    idx = gumbel_topk(scores, k, tau=0.5, generator=gen)
    assert idx.numel() == k and idx.unique().numel() == k
    # the sample is returned in draw order: perturbed scores are decreasing
    gen2 = torch.Generator().manual_seed(k)
    torch.randn(300, 1000, generator=gen2)
    from esper.workloads.scalpel import gumbel_noise

    perturbed = scores.view(-1) / 0.5 + gumbel_noise((300_000,), gen2)
    chosen = perturbed[idx]
    assert (chosen[:-1] >= chosen[1:]).all()
    assert float(chosen[-1]) == float(torch.topk(perturbed, k).values[-1])


def test_gumbel_topk_skips_minus_inf_and_checks_k() -> None:
    scores = torch.full((10,), float("-inf"))
    scores[[2, 5, 7]] = 0.0
    for seed in range(10):
        idx = gumbel_topk(scores, 3, generator=torch.Generator().manual_seed(seed))
        assert sorted(idx.tolist()) == [2, 5, 7]
    with pytest.raises(ValueError, match="k=4"):
        gumbel_topk(scores, 4)
    with pytest.raises(ValueError, match="tau"):
        gumbel_topk(scores, 1, tau=-1.0)


def test_gumbel_topk_temperature() -> None:
    scores = torch.tensor([5.0, 0.0, 0.0, 0.0])
    assert gumbel_topk(scores, 1, tau=0.0).tolist() == [0]
    gen = torch.Generator().manual_seed(0)
    firsts = [int(gumbel_topk(scores, 1, tau=0.05, generator=gen)) for _ in range(50)]
    assert firsts == [0] * 50
    hot = [int(gumbel_topk(scores, 1, tau=100.0, generator=gen)) for _ in range(400)]
    counts = torch.bincount(torch.tensor(hot), minlength=4).float() / 400
    assert (counts > 0.15).all()  # near-uniform at high temperature


def test_gumbel_topk_samples_without_replacement_by_weight() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.2])
    firsts = torch.tensor([int(gumbel_topk(probs.log(), 1, generator=gen)) for _ in range(3000)])
    freq = torch.bincount(firsts, minlength=3).float() / 3000
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)


def test_relaxed_topk_sums_to_k_and_hardens() -> None:
    scores = torch.tensor([3.0, 1.0, 0.5, -1.0, 2.0], requires_grad=True)
    soft = relaxed_topk(scores, 2, tau=1.0, generator=torch.Generator().manual_seed(0))
    assert float(soft.detach().sum()) == pytest.approx(2.0, abs=1e-5)
    assert (soft >= 0).all()
    soft[0].backward()
    assert scores.grad is not None and torch.count_nonzero(scores.grad) > 0
    cold = relaxed_topk(scores.detach(), 2, tau=0.01, noise=False)
    torch.testing.assert_close(cold, torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
@pytest.mark.parametrize("n", [1000, 400_000])
def test_topk_among_matches_brute_force(n: int, density: float, largest: bool) -> None:
    gen = torch.Generator().manual_seed(n)
    scores = torch.randn(n, generator=gen)
    eligible = torch.rand(n, generator=gen) < density
    k = int(eligible.sum()) // 3
    idx = topk_among(scores, eligible, k, largest=largest)
    assert idx.numel() == k and eligible[idx].all()
    candidates = scores[eligible]
    expected = torch.topk(candidates, k, largest=largest).values.sort().values
    assert torch.equal(scores[idx].sort().values, expected)
    with pytest.raises(ValueError, match="must lie in"):
        topk_among(scores, eligible, int(eligible.sum()) + 1)
    assert topk_among(scores, eligible, 0).numel() == 0


def test_topk_among_falls_back_when_the_sampled_bound_is_too_tight() -> None:
    # Every sampled (strided) entry is tiny, the large ones sit between samples.
    n = 1 << 18
    scores = torch.zeros(n)
    stride = n // (1 << 16)
    scores[1::stride] = torch.arange(1, n // stride + 1, dtype=torch.float32)
    k = 40_000
    idx = topk_among(scores, torch.ones(n, dtype=torch.bool), k)
    assert torch.equal(scores[idx].sort().values, torch.topk(scores, k).values.sort().values)


def test_gumbel_topk_blocks_respects_each_blocks_room() -> None:
    scores = torch.tensor([9.0, 8.0, 7.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.5, -float("inf"), 0.0])
    room = torch.tensor([1, 2, 0])  # blocks of 4: the first takes 1, the second 2, the last 0
    picked = gumbel_topk_blocks(scores, 5, 4, room, tau=0.0)
    assert sorted(picked.tolist()) == [0, 6, 7]  # k clipped to the total room (3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # sampled: never more than the room in any block
        picked = gumbel_topk_blocks(scores, 3, 4, room, tau=1.0, generator=gen)
        counts = torch.bincount(picked // 4, minlength=3)
        assert (counts <= room).all() and picked.numel() == 3
    with pytest.raises(ValueError, match="blocks of 4"):
        gumbel_topk_blocks(scores[:10], 1, 4, room)
