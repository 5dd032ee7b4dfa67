"""Behaviour cloning from RigL: after cloning, the Specialists' mean action is RigL's."""

from __future__ import annotations

import pytest
import torch

from esper.conf import compose
from esper.policies.emrakul import ActionCodec, SpecialistActor
from esper.policies.imitation import (
    behaviour_clone,
    collect_rigl_demonstrations,
    rigl_action,
    rigl_drop_fraction,
)
from esper.workloads.factory import build_organism
from tests.organisms import TINY_ORGANISM

_BASE = TINY_ORGANISM


def test_rigl_cosine_schedule() -> None:
    assert rigl_drop_fraction(0, 100) == pytest.approx(0.3)
    assert rigl_drop_fraction(50, 100) == pytest.approx(0.15)
    assert rigl_drop_fraction(100, 100) == 0.0
    assert rigl_drop_fraction(150, 100) == 0.0
    action = rigl_action(0.3)
    assert action.prune_mix[0] == 1.0 and action.regrow_mix[0] == 1.0 and not action.heat


def test_schedule_agrees_with_the_rigl_baseline() -> None:
    from esper.policies.baselines.schedules import CosineDropFraction

    baseline = CosineDropFraction(0.3, 40)
    for t in (0, 7, 20, 39, 40, 55):
        assert rigl_drop_fraction(t, 40) == pytest.approx(baseline(t))


def test_behaviour_cloning_matches_rigl_on_held_out_observations() -> None:
    org = build_organism(compose(_BASE))
    steps = [org.reset()]
    codec = ActionCodec(max_turnover=0.5)
    # T_end far beyond the demonstrations: RigL's drop fraction stays ≈ α = 0.3.
    demos = collect_rigl_demonstrations([org], steps, surgeries=10, t_end=200, codec=codec)
    assert len(demos) == 10 * len(org.scalpel.names)
    assert steps[0].info["surgery_step"] == 10  # the organism really advanced
    train, held_out = demos.split(0.7)
    torch.manual_seed(0)
    actor = SpecialistActor(demos.obs.shape[1], max_layers=4, hidden=32)

    def mean_actions() -> list:
        with torch.no_grad():
            raw = actor.distribution(held_out.obs, held_out.ids).mode()
        return [codec.decode(r) for r in raw]

    before = mean_actions()
    losses = behaviour_clone(actor, train, epochs=150, lr=1e-2)
    assert losses[-1] < 0.1 * losses[0]
    after = mean_actions()
    expected = rigl_drop_fraction(8, 200)
    assert all(abs(a.turnover - expected) > 0.1 for a in before)  # not RigL to begin with
    for a in after:
        assert abs(a.turnover - expected) < 0.02
        assert a.prune_mix[0] > 0.85 and a.regrow_mix[0] > 0.85
        assert a.tau < 5e-3 and not a.heat and a.sedation == 1.0


def test_the_bits_rigl_lacks_keep_their_prior_unless_cloned() -> None:
    """RigL never heats or forgets because it cannot: by default cloning leaves those logits'
    head rows as they were; with ``clone_bits`` they learn RigL's "never"."""
    org = build_organism(compose(_BASE))
    codec = ActionCodec(max_turnover=0.5)
    demos = collect_rigl_demonstrations([org], [org.reset()], surgeries=4, t_end=200, codec=codec)
    c = ActionCodec.CONTINUOUS
    for clone_bits in (False, True):
        torch.manual_seed(0)
        actor = SpecialistActor(demos.obs.shape[1], max_layers=4, hidden=32)
        rows = actor.head.weight.detach()[c:].clone(), actor.head.bias.detach()[c:].clone()
        behaviour_clone(actor, demos, epochs=40, lr=1e-2, clone_bits=clone_bits)
        kept = torch.equal(actor.head.weight[c:], rows[0]) and torch.equal(
            actor.head.bias[c:], rows[1]
        )
        assert kept is not clone_bits
        if clone_bits:
            assert (actor.head.bias[c:] < rows[1]).all()  # "never", learned
