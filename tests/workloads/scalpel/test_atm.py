"""ATM holds its layer budget exactly while it breathes (the hysteresis band alone let the
density sink about 20% below it)."""

from __future__ import annotations

from esper.conf import compose
from esper.workloads.factory import build_organism
from tests.organisms import TINY_ORGANISM


def test_atm_keeps_every_layer_at_its_budget_over_many_updates() -> None:
    cfg = compose([*TINY_ORGANISM, "workload.scalpel.mechanism.name=atm"])
    organism = build_organism(cfg)
    organism.reset()
    mechanism = organism.scalpel.mechanism
    budgets = {n: organism.scalpel.mask(n).sum().item() for n in organism.scalpel.names}
    changes = 0
    for _ in range(12):
        step = organism.step({})
        changes += len(step.events)
        for name, budget in budgets.items():
            assert organism.scalpel.mask(name).sum().item() == budget
            assert mechanism.targets[name] == budget
    assert changes > 0  # the masks did move
