"""The lean SGD step is PyTorch's SGD step, bit for bit, and steps aside when it is not."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from esper.workloads.hosts import MLP
from esper.workloads.sgd import sgd_step


def _groups(model: torch.nn.Module, lrs: tuple[float, float]) -> list[dict[str, object]]:
    params = list(model.parameters())
    return [{"params": params[0::2], "lr": lrs[0]}, {"params": params[1::2], "lr": lrs[1]}]


@pytest.mark.parametrize("lrs", [(0.05, 0.05), (0.05, 0.01)])
def test_bit_identical_to_sgd_step_with_groups_and_missing_gradients(
    lrs: tuple[float, float],
) -> None:
    torch.manual_seed(0)
    ours = MLP((12,), 3, hidden=(8, 6))
    theirs = copy.deepcopy(ours)
    opt_ours = torch.optim.SGD(_groups(ours, lrs), momentum=0.9)
    opt_theirs = torch.optim.SGD(_groups(theirs, lrs), momentum=0.9)
    for step in range(5):
        x, y = torch.randn(16, 12), torch.randint(0, 3, (16,))
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if step == 2:  # a parameter without a gradient is skipped, as SGD skips it
                next(model.parameters()).grad = None
        assert sgd_step(opt_ours)
        opt_theirs.step()
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    for a, b in zip(opt_ours.state.values(), opt_theirs.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


@pytest.mark.parametrize(
    "settings",
    [
        {"momentum": 0.0},
        {"momentum": 0.9, "weight_decay": 1e-4},
        {"momentum": 0.9, "nesterov": True},
    ],
)
def test_other_settings_are_left_to_the_optimizer(settings: dict[str, object]) -> None:
    model = MLP((4,), 2, hidden=(3,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, **settings)  # type: ignore[arg-type]
    F.cross_entropy(model(torch.randn(2, 4)), torch.tensor([0, 1])).backward()
    assert not sgd_step(optimizer)
    assert not optimizer.state  # nothing touched
    adam = torch.optim.Adam(model.parameters())
    assert not sgd_step(adam)
