"""Shrink & Perturb: ``θ ← λ·θ + σ·ε`` on every layer's active weights at its period, masks and
density unchanged (Ash & Adams 2020)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from esper.policies.base import make_policy
from esper.policies.evaluation import evaluate_policy
from tests.policies.baselines.test_baselines import started
from tests.workloads.test_organism import _organism


@pytest.mark.parametrize(("shrink", "perturb"), [(0.5, 0.0), (0.8, 0.01), (0.4, 0.1)])
def test_each_active_weight_becomes_lambda_w_plus_sigma_eps(shrink: float, perturb: float) -> None:
    org, policy, step = started("shrink_perturb", interval=6, shrink=shrink, perturb=perturb)
    actions = policy.act(org, step)  # K = 6: due at the first surgery, SGD step 6
    assert list(actions) == org.scalpel.names
    weights = dict(org.host.named_parameters())
    before = {n: weights[n].detach().clone().view(-1) for n in actions}
    masks = {n: org.scalpel.mask(n).clone() for n in actions}
    replay = torch.Generator()
    replay.set_state(org.generator.get_state())  # ε is the organism's next draws, layer by layer
    surgery = org.begin(actions)
    for name, action in actions.items():
        active = masks[name].view(-1).nonzero().view(-1)
        assert torch.equal(torch.as_tensor(action.forget), active)
        assert (action.forget_shrink, action.forget_perturb) == (shrink, perturb)
        bound = 1.0 / math.sqrt(weights[name][0].numel())  # U(±1/√fan_in)
        eps = (torch.rand(active.numel(), generator=replay) * 2 - 1) * bound
        expected = before[name].clone()
        expected[active] = shrink * before[name][active] + perturb * eps
        torch.testing.assert_close(weights[name].detach().view(-1), expected)
        assert torch.equal(org.scalpel.mask(name), masks[name])
        assert weights[name].detach().view(-1)[~masks[name].view(-1)].eq(0).all()
    forgets = [e for e in surgery.events if e.action == "forget"]
    assert [e.layer for e in forgets] == org.scalpel.names


def test_half_shrink_without_noise_halves_the_active_weights() -> None:
    org, policy, step = started("shrink_perturb", interval=6, shrink=0.5, perturb=0.0)
    name = org.scalpel.names[0]
    weight = dict(org.host.named_parameters())[name]
    before = weight.detach().clone()
    org.begin(policy.act(org, step))
    assert torch.equal(weight.detach(), before * 0.5)  # pruned weights stay 0 = 0.5 · 0


def test_nothing_happens_off_schedule_and_masks_and_density_hold() -> None:
    org, policy, step = started("shrink_perturb", interval=12)
    masks = {n: org.scalpel.mask(n).clone() for n in org.scalpel.names}
    density = org.scalpel.global_density()
    acted = []
    for _ in range(4):  # K = 6: acting at SGD steps 6, 12, 18 and 24
        actions = policy.act(org, step)
        acted.append(bool(actions))
        step = org.step(actions)
        assert not step.info["diverged"]
        forgets = [e for e in step.events if e.action == "forget"]
        assert len(forgets) == (len(org.scalpel.names) if actions else 0)
    assert acted == [False, True, False, True]
    assert all(torch.equal(org.scalpel.mask(n), m) for n, m in masks.items())
    assert org.scalpel.global_density() == density
    assert policy.state_dict()["applied"] == 2


def test_state_round_trip_resumes_the_schedule() -> None:
    org, policy, step = started("shrink_perturb", interval=12, shrink=0.7)
    step = org.step(policy.act(org, step))  # SGD step 6: not due
    assert policy.act(org, step)  # SGD step 12: due
    state = policy.state_dict()
    assert state == {"clock": {"last": 12}, "applied": 1}
    clone = make_policy("shrink_perturb", interval=12, shrink=0.7)
    clone.load_state_dict(state)
    assert clone.state_dict() == state
    for t in (18, 24):
        org.sgd_step = t
        assert bool(clone.act(org, step)) == bool(policy.act(org, step)) == (t == 24)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"interval": 0}, r"interval=0 must be ≥ 1"),
        ({"shrink": 1.5}, r"shrink=1.5 must lie in \[0, 1\]"),
        ({"shrink": -0.1}, r"shrink=-0.1 must lie in \[0, 1\]"),
        ({"perturb": 2.0}, r"perturb=2.0 must lie in \[0, 1\]"),
        ({"perturb": -1.0}, r"perturb=-1.0 must lie in \[0, 1\]"),
    ],
)
def test_bad_parameters_are_refused_naming_them(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy("shrink_perturb", **params)


def test_a_short_evaluation_keeps_the_budget() -> None:
    org = _organism()
    report = evaluate_policy(org, make_policy("shrink_perturb", interval=6), surgeries=3)
    assert report.policy == "shrink_perturb" and report.surgeries == 3
    assert not report.diverged and math.isfinite(report.online_accuracy)
    assert report.density == pytest.approx(0.2, abs=0.01)
    assert report.events >= 3 * len(org.scalpel.names)  # a forget per layer per surgery
