"""Periodic resets re-initialise the last layers at their period, masks unchanged."""

from __future__ import annotations

import torch

from tests.policies.baselines.test_baselines import started


def test_the_last_layer_gets_fresh_weights_at_each_period_and_keeps_its_mask() -> None:
    org, policy, step = started("periodic_reset", "policy.density=0.3", interval=12)
    head = org.scalpel.names[-1]
    mask = org.scalpel.mask(head).clone()
    resets = []
    for _ in range(4):  # K = 6: due at SGD steps 12 and 24
        actions = policy.act(org, step)
        resets.append(sorted(actions))
        if actions:
            (action,) = actions.values()
            assert torch.equal(torch.as_tensor(action.regrow), mask.view(-1).nonzero().view(-1))
            assert action.regrow_init == "kaiming"
        step = org.step(actions)
    assert resets == [[], [head], [], [head]]  # acting at SGD steps 6, 12, 18 and 24
    assert torch.equal(org.scalpel.mask(head), mask)
    assert policy.state_dict()["resets"] == 2
