"""SET, RigL and random: the drop-and-grow rule on scripted weights and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from esper.policies.base import make_policy
from esper.policies.baselines import RigL
from esper.policies.baselines.schedules import CosineDropFraction
from esper.workloads.organism import Organism
from tests.policies.baselines.test_baselines import started


def _script(
    org: Organism, monkeypatch: pytest.MonkeyPatch, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Distinct scripted weights on the support and scripted dense gradients everywhere."""
    g = torch.Generator().manual_seed(seed)
    grads: dict[str, torch.Tensor] = {}
    params = dict(org.host.named_parameters())
    with torch.no_grad():
        for name in org.scalpel.names:
            w = params[name]
            mask = org.scalpel.mask(name)
            values = torch.randperm(w.numel(), generator=g).view_as(w).float() + 1.0
            signs = torch.where(torch.rand(w.shape, generator=g) < 0.5, -1.0, 1.0)
            w.copy_(torch.where(mask, values * signs / w.numel(), 0.0))
            grads[name] = (torch.randperm(w.numel(), generator=g).view_as(w).float() - 7.5) / 9
    monkeypatch.setattr(org.scalpel, "dense_grad", lambda name: grads[name])
    return grads


def _as_set(x: object) -> set[int]:
    return set(torch.as_tensor(x, dtype=torch.int64).view(-1).tolist())


def test_rigl_drops_smallest_magnitudes_and_grows_largest_dense_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org, policy, first = started("rigl", delta_t=6, t_end=60)
    grads = _script(org, monkeypatch)
    actions = policy.act(org, first)  # t = 6 = ΔT: an update is due
    fraction = 0.3 / 2 * (1 + math.cos(math.pi * 6 / 60))
    weights = dict(org.host.named_parameters())
    assert set(actions) == set(org.scalpel.names)
    for name, action in actions.items():
        mask = org.scalpel.mask(name).view(-1)
        active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
        k = int(active.numel() * fraction)
        w = weights[name].detach().view(-1).abs()
        g = grads[name].view(-1).abs()
        expect_drop = active[torch.argsort(w[active])[:k]]
        expect_grow = inactive[torch.argsort(g[inactive], descending=True)[:k]]
        assert _as_set(action.prune) == _as_set(expect_drop)
        assert _as_set(action.regrow) == _as_set(expect_grow)
        assert action.regrow_init == "zero"
    before = org.scalpel.densities()
    org.step(actions)
    assert org.scalpel.densities() == before  # drop-and-grow holds every layer's density


def test_regrown_rigl_weights_start_at_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    org, policy, first = started("rigl", delta_t=6, t_end=60)
    _script(org, monkeypatch)
    name, action = next(iter(policy.act(org, first).items()))
    org.scalpel.regrow(name, action.regrow, init=action.regrow_init)
    weight = dict(org.host.named_parameters())[name].detach().view(-1)
    assert torch.all(weight[torch.as_tensor(action.regrow)] == 0)


def test_rigl_updates_every_delta_t_until_t_end() -> None:
    policy = RigL(delta_t=12, t_end=30)
    policy.clock.reset()
    due = [t for t in range(6, 61, 6) if policy.clock.due(t)]
    assert due == [12, 24]  # 36 and 48 are past T_end


def test_set_and_rigl_differ_only_in_their_grow_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org, rigl, first = started("rigl", delta_t=6, t_end=10**9)
    _script(org, monkeypatch)
    runs = {}
    for label, seed in (("a", 0), ("b", 0), ("c", 1)):
        set_policy = make_policy("set", zeta=0.3, delta_t=6, seed=seed)
        set_policy.reset(org, first)
        runs[label] = set_policy.act(org, first)
    r = rigl.act(org, first)
    for name in org.scalpel.names:
        # Same drop rule (|w|); RigL's fraction at t=6 of T_end=1e9 is α = ζ = 0.3.
        assert _as_set(runs["a"][name].prune) == _as_set(r[name].prune)
        mask = org.scalpel.mask(name).view(-1)
        grown = torch.as_tensor(runs["a"][name].regrow)
        assert not mask[grown].any() and grown.numel() == len(r[name].prune)
        # Random regrowth, reproducible from the seed, different for another seed.
        assert _as_set(runs["a"][name].regrow) == _as_set(runs["b"][name].regrow)
        assert _as_set(runs["a"][name].regrow) != _as_set(runs["c"][name].regrow)
        assert _as_set(runs["a"][name].regrow) != _as_set(r[name].regrow)


def test_random_drops_and_grows_at_random_and_holds_densities() -> None:
    org, policy, step = started("random", fraction=0.25, delta_t=6)
    weights = dict(org.host.named_parameters())
    before = org.scalpel.densities()
    for _ in range(2):
        actions = policy.act(org, step)
        for name, action in actions.items():
            mask = org.scalpel.mask(name).view(-1)
            prune = torch.as_tensor(action.prune)
            assert mask[prune].all() and not mask[torch.as_tensor(action.regrow)].any()
            assert prune.numel() == int(int(mask.sum()) * 0.25)
            w = weights[name].detach().view(-1).abs()
            smallest = set(torch.argsort(torch.where(mask, w, math.inf))[: prune.numel()].tolist())
            assert _as_set(prune) != smallest  # not a magnitude rule
        step = org.step(actions)
        assert org.scalpel.densities() == before


def test_cosine_drop_fraction_at_0_half_and_end() -> None:
    f = CosineDropFraction(alpha=0.3, t_end=1000)
    assert f(0) == pytest.approx(0.3)
    assert f(500) == pytest.approx(0.15)
    assert f(1000) == pytest.approx(0.0)
    assert f(2000) == 0.0
    assert f(250) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))


def test_no_update_outside_the_schedule_leaves_the_organism_alone() -> None:
    org, policy, first = started("set", delta_t=12)
    assert policy.act(org, first) == {}  # t = 6 < ΔT
    step = org.step({})
    assert set(policy.act(org, step)) == set(org.scalpel.names)  # t = 12
    assert policy.act(org, step) == {}  # one update per multiple of ΔT
