"""SWR (Hernandez-Garcia et al. 2025): the active weights of lowest utility ``|w·∂L/∂w|`` are
re-initialised in place at the period, masks and density unchanged."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from esper.policies.base import make_policy
from esper.policies.baselines.swr import SWR, chosen_weights
from esper.policies.evaluation import evaluate_policy
from tests.policies.baselines.test_baselines import started
from tests.workloads.test_organism import _organism

# A 2×3 layer by hand: u = |w·g| = [[0.1, 0.2, 0], [1.0, 0.004, 1.0]]; weight 3 is pruned, so
# the active utilities are [0.1, 0.2, 0, 0.004, 1.0] at [0, 1, 2, 4, 5], their mean 0.2608.
_W = torch.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], dtype=torch.float64)
_G = torch.tensor([[0.1, 0.1, 0.0], [2.0, 0.001, 1.0]], dtype=torch.float64)
_U = (_W * _G).abs()
_MASK = torch.tensor([[True, True, True], [False, True, True]])


@pytest.mark.parametrize(
    ("method", "factor", "expected"),
    [
        ("threshold", 0.0, [2]),  # u ≤ 0
        ("threshold", 0.05, [2, 4]),  # u ≤ 0.01304
        ("threshold", 0.5, [0, 2, 4]),  # u ≤ 0.1304
        ("threshold", 1.0, [0, 1, 2, 4]),  # u ≤ 0.2608; the pruned 3 is never a candidate
        ("proportional", 0.4, [2, 4]),  # 0.4 · 5 = 2 lowest: u = 0, 0.004
        ("proportional", 0.6, [0, 2, 4]),  # 3 lowest
        ("proportional", 1.0, [0, 1, 2, 4, 5]),
    ],
)
def test_the_lowest_utility_active_weights_are_chosen_by_hand(
    method: str, factor: float, expected: list[int]
) -> None:
    chosen = chosen_weights(_U, _MASK, method, factor, torch.Generator().manual_seed(0))
    assert chosen.tolist() == expected


def test_proportional_counts_round_stochastically_to_the_expected_number() -> None:
    # 0.5 · 5 = 2.5 weights: 2 or 3 of [2, 4, 0, ...], 3 with probability 0.5
    counts = []
    for seed in range(400):
        chosen = chosen_weights(_U, _MASK, "proportional", 0.5, torch.Generator().manual_seed(seed))
        assert chosen.tolist() in ([2, 4], [0, 2, 4])
        counts.append(chosen.numel())
    assert sum(counts) / len(counts) == pytest.approx(2.5, abs=0.1)


def test_the_gradient_utility_is_the_weight_times_its_dense_gradient() -> None:
    org, policy, step = started("swr")
    assert isinstance(policy, SWR)
    weights = dict(org.host.named_parameters())
    for name in org.scalpel.names:
        w, g = weights[name].detach().double(), org.scalpel.dense_grad(name).double()
        expected = (w * g).abs().reshape(-1).cpu()
        torch.testing.assert_close(policy.utilities(org, step, name), expected)
    magnitude = make_policy("swr", utility="magnitude")
    assert isinstance(magnitude, SWR)
    name = org.scalpel.names[0]
    expected = weights[name].detach().double().abs().reshape(-1).cpu()
    torch.testing.assert_close(magnitude.utilities(org, step, name), expected)


def test_chosen_weights_get_fresh_values_in_place_and_the_rest_is_untouched() -> None:
    org, policy, step = started("swr", interval=6, factor=0.5)
    assert isinstance(policy, SWR)
    utilities = {n: policy.utilities(org, step, n) for n in org.scalpel.names}
    actions = policy.act(org, step)  # K = 6: due at the first surgery
    assert list(actions) == org.scalpel.names
    weights = dict(org.host.named_parameters())
    before = {n: weights[n].detach().clone().view(-1) for n in actions}
    masks = {n: org.scalpel.mask(n).clone() for n in actions}
    org.begin(actions)
    for name, action in actions.items():
        gen = torch.Generator().manual_seed(0)  # unused by the threshold
        chosen = chosen_weights(utilities[name], masks[name], "threshold", 0.5, gen)
        assert torch.equal(torch.as_tensor(action.prune), chosen)
        assert torch.equal(torch.as_tensor(action.regrow), chosen)
        assert action.regrow_init == "kaiming" and chosen.numel() > 0
        assert torch.equal(org.scalpel.mask(name), masks[name])
        after = weights[name].detach().view(-1)
        rest = torch.ones_like(after, dtype=torch.bool)
        rest[chosen] = False
        assert torch.equal(after[rest], before[name][rest])
        bound = 1.0 / math.sqrt(weights[name][0].numel())  # kaiming: U(±1/√fan_in)
        assert after[chosen].abs().le(bound).all() and not torch.equal(
            after[chosen], before[name][chosen]
        )
    assert policy.state_dict()["replaced"] == sum(len(a.prune) for a in actions.values())


def test_nothing_happens_off_schedule_and_masks_and_density_hold() -> None:
    org, policy, step = started("swr", interval=12, method="proportional", factor=0.05)
    masks = {n: org.scalpel.mask(n).clone() for n in org.scalpel.names}
    density = org.scalpel.global_density()
    acted = []
    for _ in range(4):  # K = 6: acting at SGD steps 6, 12, 18 and 24
        actions = policy.act(org, step)
        acted.append(bool(actions))
        step = org.step(actions)
        assert not step.info["diverged"]
    assert acted == [False, True, False, True]
    assert all(torch.equal(org.scalpel.mask(n), m) for n, m in masks.items())
    assert org.scalpel.global_density() == density


def test_state_round_trip_continues_the_clock_and_the_rounding_stream() -> None:
    org, policy, step = started("swr", interval=6, method="proportional", factor=0.05, seed=3)
    step = org.step(policy.act(org, step))
    clone = make_policy("swr", interval=6, method="proportional", factor=0.05, seed=3)
    clone.load_state_dict(policy.state_dict())
    state, restored = policy.state_dict(), clone.state_dict()
    assert state["clock"] == restored["clock"] and state["replaced"] == restored["replaced"] > 0
    assert torch.equal(state["generator"], restored["generator"])
    first, second = policy.act(org, step), clone.act(org, step)
    assert first.keys() == second.keys() and first
    for name, action in first.items():
        assert torch.equal(torch.as_tensor(action.prune), torch.as_tensor(second[name].prune))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"interval": 0}, r"interval=0 must be ≥ 1"),
        ({"factor": -1e-5}, r"factor=-1e-05 must be ≥ 0"),
        ({"method": "proportional", "factor": 1.5}, r"factor=1.5 must lie in \[0, 1\]"),
        ({"method": "top"}, r"method='top' is unknown; valid: threshold, proportional"),
        ({"utility": "fisher"}, r"utility='fisher' is unknown; valid: gradient, magnitude"),
        ({"init": "ones"}, r"init='ones' is unknown; valid: .*kaiming"),
    ],
)
def test_bad_parameters_are_refused_naming_them(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy("swr", **params)


def test_a_short_evaluation_keeps_the_budget() -> None:
    org = _organism()
    policy = make_policy("swr", interval=6, factor=0.5)
    report = evaluate_policy(org, policy, surgeries=3)
    assert report.policy == "swr" and report.surgeries == 3
    assert not report.diverged and math.isfinite(report.online_accuracy)
    assert report.density == pytest.approx(0.2, abs=0.01)
    assert policy.state_dict()["replaced"] > 0
