"""L2 Init: the gradient term by hand, supports, regrown anchors, and its place in the
optimizer's state."""

from __future__ import annotations

import pytest
import torch

from esper.workloads.l2_init import STATE_KEY, L2Init
from esper.workloads.sgd import sgd_step


def _param(*values: float) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_the_term_is_twice_lambda_times_the_distance_to_the_start() -> None:
    """``d/dθ λ‖θ − θ₀‖² = 2λ(θ − θ₀)``, added to the loss gradient."""
    w = _param(1.0, 2.0)
    opt = torch.optim.SGD([w], lr=0.1)
    l2 = L2Init(opt, {"w": w}, strength=0.1)
    with torch.no_grad():
        w.copy_(torch.tensor([1.5, 1.0]))
    w.grad = torch.tensor([0.3, 0.0], dtype=torch.float64)
    l2.add_gradient()
    assert w.grad.tolist() == pytest.approx([0.3 + 2 * 0.1 * 0.5, 2 * 0.1 * -1.0])


def test_the_step_hook_adds_it_and_the_lean_sgd_step_steps_aside() -> None:
    w = _param(1.0, -1.0)
    opt = torch.optim.SGD([w], lr=0.5, momentum=0.9)
    L2Init(opt, {"w": w}, strength=0.25)
    with torch.no_grad():
        w.add_(1.0)  # θ − θ₀ = 1
    w.grad = torch.zeros(2, dtype=torch.float64)
    assert not sgd_step(opt)  # it would skip the hook
    opt.step()
    assert w.tolist() == pytest.approx([2.0 - 0.5 * 0.5, 0.0 - 0.5 * 0.5])


def test_masked_weights_get_no_term_and_a_regrown_weight_is_anchored_where_it_joins() -> None:
    w = _param(0.5, 0.0, -0.5)
    support = torch.tensor([True, False, True])
    opt = torch.optim.SGD([w], lr=0.1)
    l2 = L2Init(opt, {"w": w}, strength=1.0, supports={"w": support})
    assert l2.anchors["w"].tolist() == [0.5, 0.0, -0.5]
    with torch.no_grad():  # surgery: weight 0 pruned (zeroed), weight 1 regrown at 0.7
        support[0], support[1] = False, True
        w.copy_(torch.tensor([0.0, 0.7, -0.2]))
    w.grad = torch.zeros(3, dtype=torch.float64)
    l2.add_gradient()
    assert w.grad.tolist() == pytest.approx([0.0, 0.0, 2 * (-0.2 + 0.5)])
    assert l2.anchors["w"].tolist() == pytest.approx([0.5, 0.7, -0.5])
    with torch.no_grad():
        w[1] = 1.0
    w.grad.zero_()
    l2.add_gradient()
    assert w.grad[1].item() == pytest.approx(2 * 0.3)


def test_anchors_travel_in_the_optimizer_state_dict() -> None:
    w = _param(1.0, 2.0)
    support = torch.tensor([True, True])
    opt = torch.optim.Adam([w], lr=0.1)
    L2Init(opt, {"w": w}, strength=0.01, supports={"w": support})
    w.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    state = opt.state_dict()
    assert state[STATE_KEY]["anchors"]["w"].tolist() == [1.0, 2.0]
    other = _param(5.0, 5.0)
    opt2 = torch.optim.Adam([other], lr=0.1)
    l2 = L2Init(opt2, {"w": other}, strength=0.01, supports={"w": support.clone()})
    opt2.load_state_dict(state)
    assert l2.anchors["w"].tolist() == [1.0, 2.0] and STATE_KEY in state  # the caller's intact
    assert torch.equal(opt2.state[other]["exp_avg"], opt.state[w]["exp_avg"])
    plain = opt2.state_dict()
    del plain[STATE_KEY]
    with pytest.raises(ValueError, match="no L2 Init anchors"):
        opt2.load_state_dict(plain)


def test_bad_strength_and_supports_are_refused() -> None:
    w = _param(1.0)
    opt = torch.optim.SGD([w], lr=0.1)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            L2Init(opt, {"w": w}, strength=bad)
    with pytest.raises(ValueError, match="support 'v' matches no parameter"):
        L2Init(opt, {"w": w}, strength=0.1, supports={"v": torch.ones(1, dtype=torch.bool)})
