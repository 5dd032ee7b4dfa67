"""Dense, static and GMP: who prunes, when, and to how many weights."""

from __future__ import annotations

import pytest
import torch

from esper.policies.base import make_policy
from esper.policies.baselines import GMP, CubicSparsity, Static
from esper.workloads.scalpel import allocate
from tests.policies.baselines.test_baselines import started


def test_gmp_cubic_curve_at_start_middle_and_end() -> None:
    s = CubicSparsity(initial=0.5, final=0.9, begin=100, frequency=10, steps=8)
    assert s.end == 180
    assert s(0) == s(100) == pytest.approx(0.5)
    assert s(140) == pytest.approx(0.9 + (0.5 - 0.9) * 0.5**3)
    assert s(149) == s(140)  # held until the next pruning step
    assert s(180) == s(1000) == pytest.approx(0.9)
    values = [s(t) for t in range(100, 181, 10)]
    assert values == sorted(values)  # sparsity only rises
    with pytest.raises(ValueError, match="only prunes"):
        CubicSparsity(initial=0.5, final=0.4, begin=0, frequency=1, steps=1)


def test_dense_never_operates() -> None:
    org, policy, step = started("dense")
    before = {n: m.clone() for n, m in org.scalpel.masks().items()}
    for _ in range(2):
        assert policy.act(org, step) == {}
        step = org.step({})
    assert all(torch.equal(before[n], m) for n, m in org.scalpel.masks().items())


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_static_prunes_once_to_budget_by_magnitude(distribution: str) -> None:
    org, policy, step = started(
        "static", "policy.density=1.0", density=0.2, distribution=distribution
    )
    assert org.scalpel.global_density() == 1.0
    assert isinstance(policy, Static)
    shapes = {n: tuple(org.scalpel.mask(n).shape) for n in org.scalpel.names}
    counts = allocate(shapes, 0.2, distribution)
    weights = dict(org.host.named_parameters())
    actions = policy.act(org, step)
    for name, action in actions.items():
        w = weights[name].detach().view(-1).abs()
        expected = torch.argsort(w)[: w.numel() - counts[name]]
        assert set(torch.as_tensor(action.prune).tolist()) == set(expected.tolist())
        assert len(action.regrow) == 0
    step = org.step(actions)
    assert {n: int(m.sum()) for n, m in org.scalpel.masks().items()} == counts
    masks = {n: m.clone() for n, m in org.scalpel.masks().items()}
    assert policy.act(org, step) == {}  # once only
    org.step({})
    assert all(torch.equal(masks[n], m) for n, m in org.scalpel.masks().items())


@pytest.mark.parametrize("overrides", [(), ("workload.scalpel.keep_dense=[layers.2.weight]",)])
def test_static_at_the_organisms_own_budget_keeps_its_support(overrides: tuple[str, ...]) -> None:
    org, policy, step = started("static", *overrides, distribution="erk")  # the organism's own
    assert policy.act(org, step) == {}


def test_gmp_prunes_by_magnitude_along_the_cubic_schedule_without_regrowth() -> None:
    org, policy, step = started("gmp", final_density=0.1, frequency=6, steps=4)
    assert isinstance(policy, GMP) and policy.schedule is not None
    assert policy.schedule.initial == pytest.approx(1 - org.scalpel.global_density())
    weights = dict(org.host.named_parameters())
    densities = [org.scalpel.global_density()]
    for _ in range(5):
        targets = policy.targets(org.sgd_step)
        actions = policy.act(org, step)
        for name, action in actions.items():
            assert len(action.regrow) == 0
            mask = org.scalpel.mask(name).view(-1)
            w = weights[name].detach().view(-1).abs()
            smallest = torch.argsort(torch.where(mask, w, torch.inf))[
                : int(mask.sum()) - targets[name]
            ]
            assert set(torch.as_tensor(action.prune).tolist()) == set(smallest.tolist())
        step = org.step(actions)
        densities.append(org.scalpel.global_density())
    assert densities == sorted(densities, reverse=True)
    assert densities[-1] == pytest.approx(0.1, abs=2e-3)  # t = 30 ≥ t_0 + nΔt = 24


def test_gmp_keeps_the_organisms_dense_layers_dense() -> None:
    dense = "workload.scalpel.keep_dense=[layers.2.weight]"
    org, policy, step = started("gmp", dense, final_density=0.15, frequency=6, steps=1)
    assert org.scalpel.density("layers.2.weight") == 1.0
    step = org.step(policy.act(org, step))  # t = 6 = t_0 + nΔt: straight to the end
    assert org.scalpel.density("layers.2.weight") == 1.0
    assert org.scalpel.global_density() == pytest.approx(0.15, abs=2e-3)


def test_gmp_refuses_a_final_density_above_the_start() -> None:
    org = started("dense")[0]
    policy = make_policy("gmp", final_density=0.5)
    with pytest.raises(ValueError, match=r"below 0\.2"):
        policy.reset(org, org.reset())


def test_dense_start_gives_gmp_a_dense_organism_and_the_budget() -> None:
    from esper.policies.base import dense_start

    assert dense_start(0.05, "gmp", {"frequency": 4}) == (
        1.0,
        {"final_density": 0.05, "frequency": 4},
    )
    assert dense_start(0.05, "gmp", {"final_density": 0.2}) == (1.0, {"final_density": 0.2})
    assert dense_start(0.1, "rigl", {"alpha": 0.3}) == (0.1, {"alpha": 0.3})
    assert dense_start(1.0, "gmp", {}) == (1.0, {})
