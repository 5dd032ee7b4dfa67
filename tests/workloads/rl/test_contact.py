"""The contact-aware Fisher of an agent: taken over its decision-critical states (smallest
action gap, terminal transitions); different from the plain Fisher on a scripted batch, equal
to it when every state is critical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper.workloads.rl.contact import action_gaps, decision_critical
from esper.workloads.sensors.gradients import gradient_statistics


def _td_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.gather(1, y[:, :1].long()).squeeze(1) - y[:, 1]) ** 2


def _scripted() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear Q-network of 2 actions whose values are ``(s₀, s₁)``: states with equal
    features are on the fence (gap 0); state 4 ends its episode."""
    q = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        q[0].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 1.0], [3.0, -2.0], [0.5, 0.5], [4.0, 0.0], [2.0, -1.0], [-3.0, 1.0]])
    y = torch.tensor([[0, 0.0, 0], [1, 1.0, 0], [1, 2.0, 0], [0, 0.5, 0], [1, 0.0, 1], [0, 1.0, 0]])
    return q, x, y


def test_critical_states_are_terminal_then_smallest_gap() -> None:
    q, x, y = _scripted()
    values = q(x).detach()
    assert action_gaps(values).tolist() == [0.0, 5.0, 0.0, 4.0, 3.0, 4.0]
    assert decision_critical(values, y, torch.zeros(6), 0.5).tolist() == [0, 2, 4]
    assert decision_critical(values, y[:, :2], torch.zeros(6), 0.3).tolist() == [0, 2]
    with pytest.raises(ValueError, match="quantile"):
        decision_critical(values, y, torch.zeros(6), 0.0)


def test_the_contact_fisher_differs_from_the_plain_one_unless_every_state_is_critical() -> None:
    q, x, y = _scripted()
    contact = gradient_statistics(q, x, y, loss_fn=_td_loss, boundary_quantile=0.5,
                                  boundary_fn=decision_critical)  # fmt: skip
    (stats,) = contact.layers.values()
    assert contact.boundary is not None and contact.boundary.tolist() == [0, 2, 4]
    assert stats.contact_fisher is not None
    # by hand: g_b = 2 (q_a − target) ∂q_a/∂W, over the critical states only
    by_hand = torch.zeros(2, 2)
    for b in (0, 2, 4):
        a = int(y[b, 0])
        residual = float(x[b, a] - y[b, 1])
        g = torch.zeros(2, 2)
        g[a] = 2 * residual * x[b]
        by_hand += g**2 / 3
    torch.testing.assert_close(stats.contact_fisher, by_hand)
    assert not torch.allclose(stats.contact_fisher, stats.fisher)
    every = gradient_statistics(q, x, y, loss_fn=_td_loss, boundary_quantile=1.0,
                                boundary_fn=decision_critical)  # fmt: skip
    (all_critical,) = every.layers.values()
    assert all_critical.contact_fisher is not None
    torch.testing.assert_close(all_critical.contact_fisher, all_critical.fisher)
