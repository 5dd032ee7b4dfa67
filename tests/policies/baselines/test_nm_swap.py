"""Drop-and-grow surgeons (RigL, SET, random) keep N:M masks valid: regrowth goes where the
drop made room, and the density is unchanged."""

from __future__ import annotations

import pytest
import torch

from esper.conf import compose
from esper.policies.base import make_policy, swap
from esper.workloads.factory import build_organism
from esper.workloads.scalpel.nm import nm_violations
from tests.organisms import TINY_ORGANISM


@pytest.mark.parametrize("name", ["rigl", "set", "random"])
def test_swapping_surgeons_keep_two_four_patterns(name: str) -> None:
    cfg = compose([*TINY_ORGANISM, "workload.scalpel.mechanism.name=nm"])
    organism = build_organism(cfg)
    step = organism.reset()
    policy = make_policy(name, delta_t=4)
    policy.reset(organism, step)
    density = organism.scalpel.global_density()
    swapped = 0
    for _ in range(3):
        actions = policy.act(organism, step)
        swapped += sum(int(torch.as_tensor(a.regrow).numel()) for a in actions.values())
        step = organism.step(actions)
        for layer in organism.scalpel.names:
            if organism.scalpel.block_pattern(layer) is not None:
                assert nm_violations(organism.scalpel.mask(layer), 2, 4) == 0
        assert organism.scalpel.global_density() == pytest.approx(density)
    assert swapped > 0


def test_swap_with_a_pattern_grows_only_into_freed_blocks() -> None:
    mask = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    drop_scores = torch.tensor([0.0, 5.0, 0, 0, 6.0, 7.0, 0, 0])  # weight 0 is dropped
    grow_scores = torch.tensor([0.0, 0, 1.0, 2.0, 0, 0, 9.0, 8.0])  # block 1's are better
    drop, grow = swap(drop_scores, grow_scores, mask, 1, pattern=(2, 4))
    assert drop.tolist() == [0] and grow.tolist() == [3]  # block 0 has the room, not block 1
    _, unconstrained = swap(drop_scores, grow_scores, mask, 1)
    assert unconstrained.tolist() == [6]
