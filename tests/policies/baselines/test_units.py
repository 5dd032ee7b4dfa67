"""CBP and ReDo: which units are reset."""

from __future__ import annotations

import pytest
import torch

from esper.policies.baselines import CBP
from esper.workloads.sensors import ACTIVATIONS
from tests.policies.baselines.test_baselines import started


def test_cbp_utility_is_the_running_contribution() -> None:
    org, policy, first = started("cbp", replacement_rate=0.0)
    assert isinstance(policy, CBP)
    assert list(policy.units) == ["layers.0.weight", "layers.1.weight"]  # never the output layer
    assert policy.act(org, first) == {}
    weights = dict(org.host.named_parameters())
    h = ACTIVATIONS["relu"](first.reading.gradients.outputs["layers.0.weight"]).abs().mean(0)
    w_out = weights["layers.1.weight"].detach().abs().sum(0)
    expected = 0.01 * h.double() * w_out.double()
    assert torch.allclose(policy.units["layers.0.weight"].utility, expected)
    # Bias correction after one update: u / (1 − 0.99).
    assert torch.allclose(policy.utilities()["layers.0.weight"], expected / 0.01)
    assert torch.all(policy.units["layers.0.weight"].age == 6)  # ages count SGD steps


def test_cbp_replaces_the_lowest_utility_mature_units_only() -> None:
    org, policy, first = started("cbp", replacement_rate=0.0, maturity_threshold=100)
    assert isinstance(policy, CBP)
    units = policy.units["layers.0.weight"]
    n = units.utility.numel()
    scripted = torch.randperm(n, generator=torch.Generator().manual_seed(3)).double() + 10.0
    units.utility = scripted.clone()
    units.updates[:] = 10_000  # bias correction ≈ 1
    units.age[:] = 500
    immature = torch.argsort(scripted)[:2]  # the two lowest utilities are too young
    units.age[immature] = 50
    units.pending = 3.0
    policy.units["layers.1.weight"].pending = 0.0
    actions = policy.act(org, first)  # t = 6: immature ages become 56, still ≤ 100
    assert list(actions) == ["layers.0.weight"]
    chosen = set(torch.as_tensor(actions["layers.0.weight"].reset_units).tolist())
    assert chosen == set(torch.argsort(scripted)[2:5].tolist())
    idx = torch.tensor(sorted(chosen))
    assert torch.all(units.age[idx] == 0) and torch.all(units.utility[idx] == 0)
    assert units.pending == pytest.approx(0.0)
    out = org.step(actions)
    assert [e.count for e in out.events if e.action == "reset"] == [3]


def test_cbp_waits_for_maturity_and_accumulates_the_replacement_rate() -> None:
    org, policy, step = started("cbp", replacement_rate=0.01, maturity_threshold=10)
    assert isinstance(policy, CBP)
    assert policy.act(org, step) == {}  # ages 6 ≤ 10: nobody is mature
    step = org.step({})
    actions = policy.act(org, step)  # ages 12: 32 mature units × 0.01 × 6 steps = 1.92
    assert {n: len(a.reset_units) for n, a in actions.items()} == {"layers.0.weight": 1}
    assert policy.units["layers.0.weight"].pending == pytest.approx(0.92)


def test_redo_resets_exactly_the_dormant_units() -> None:
    org, policy, _ = started("redo", threshold=0.1, interval=6)
    with torch.no_grad():  # kill units 3 and 7 of the first hidden layer
        org.host.layers[0].bias[[3, 7]] = -1e3
    step = org.step({})
    actions = policy.act(org, step)
    assert "layers.2.weight" not in actions  # never the output layer
    for name, action in actions.items():
        scores = step.reading.activity[name].scores
        expected = (scores <= 0.1).nonzero().view(-1)
        assert torch.equal(torch.as_tensor(action.reset_units).sort().values, expected)
    assert {3, 7} <= set(torch.as_tensor(actions["layers.0.weight"].reset_units).tolist())
    out = org.step(actions)
    assert torch.all(org.host.layers[0].bias.detach()[[3, 7]] > -1e3)  # revived
    assert any(e.action == "reset" for e in out.events)


def test_redo_waits_for_its_interval() -> None:
    org, policy, first = started("redo", interval=12)
    assert policy.act(org, first) == {}
