"""Emrakul (MAPPO's continuous Specialists and QMIX's discrete table) operates on every Scalpel
mechanism for a few surgeries with the budget held as the mechanism defines it (N:M: valid
patterns after every surgery, the density never above N/M)."""

from __future__ import annotations

import pytest

from esper.conf import compose
from esper.policies.base import make_policy
from esper.policies.emrakul import EmrakulPolicy
from esper.policies.learners import make_learner
from esper.workloads.factory import build_organism
from esper.workloads.scalpel.nm import nm_violations
from tests.organisms import TINY_ORGANISM

_BASE = TINY_ORGANISM
_QMIX = {"batch_size": 2, "buffer_size": 16, "epsilon_anneal": 4}
_MECHANISMS = [
    "masked", "straight_through", "gumbel_softmax", "hard_concrete", "gumbel_topk",
    "atm",
    "nm",
]  # fmt: skip


@pytest.mark.parametrize("learner", ["mappo", "qmix"])
@pytest.mark.parametrize("mechanism", _MECHANISMS)
def test_emrakul_operates_on_every_mechanism_within_its_budget(
    mechanism: str, learner: str
) -> None:
    cfg = compose([*_BASE, f"workload.scalpel.mechanism.name={mechanism}"])
    organism = build_organism(cfg)
    policy = make_policy("emrakul", general_interval=2, seed=1)
    assert isinstance(policy, EmrakulPolicy)
    step = organism.reset()
    policy.reset(organism, step)
    if learner == "qmix":
        make_learner("qmix", policy, _QMIX)
    budget = organism.scalpel.global_density()
    touched = 0
    for _ in range(4):
        actions = policy.act(organism, step)
        touched += sum(a.prune.numel() + a.regrow.numel() for a in actions.values())  # type: ignore[union-attr]
        step = organism.step(actions)
        assert not step.info["diverged"]
        if mechanism == "nm":  # valid 2:4 patterns after every surgery
            for name in organism.scalpel.names:
                if organism.scalpel.block_pattern(name) is not None:
                    assert nm_violations(organism.scalpel.mask(name), 2, 4) == 0
        if mechanism == "nm":  # the pattern is the budget: never more than N of every M
            assert organism.scalpel.global_density() <= budget + 1e-9
        else:  # the support's size is the budget: surgery swaps, it does not grow or shrink it
            assert organism.scalpel.global_density() == pytest.approx(budget, abs=0.01)
    assert touched > 0  # the policy really operated
