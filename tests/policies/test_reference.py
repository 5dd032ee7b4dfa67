"""Reference twins: the same batches as their organism, exact state round trips."""

from __future__ import annotations

import copy
import math

import pytest

from esper.conf import compose
from esper.config import EsperConfig
from esper.policies.base import make_policy
from esper.policies.reference import ReferenceTwins, relative_accuracy
from esper.seeding import small_seed
from esper.workloads.factory import build_organism
from tests.organisms import TINY_ORGANISM

_SURGERIES = 27
"""RigL's default ΔT is 100 SGD steps: K = 4 needs 25 surgeries for an update."""


def _twins(cfg: EsperConfig, ids: list[int], batched: bool = False) -> ReferenceTwins:
    return ReferenceTwins(
        "rigl", lambda rid: build_organism(cfg, rid), ids, cfg.experiment.seed, batched
    )


def test_a_twin_under_the_members_own_surgeon_matches_it_exactly() -> None:
    """Same config and replica id: the same stream, weights and masks; under the same surgeon
    (RigL with the twin's seed) every step's accuracy is equal, so relative accuracy is 0."""
    cfg = compose(TINY_ORGANISM)
    organism = build_organism(cfg, 1)
    surgeon = make_policy("rigl", seed=small_seed(cfg.experiment.seed, "reference", 1))
    step = organism.reset()
    surgeon.reset(organism, step)
    twins = _twins(cfg, [1])
    assert twins.steps[0].info["accuracies"] == step.info["accuracies"]
    member: list[float] = []
    swapped = 0
    for _ in range(_SURGERIES):
        step = organism.step(surgeon.act(organism, step))
        surgeon.observe(organism, step)
        member.extend(step.info["accuracies"])
        swapped += sum(e.action == "prune" for e in step.events)
    (twin,) = twins.rollout(_SURGERIES)
    assert swapped > 0 and not twin.diverged
    assert twin.accuracies == member and len(member) == _SURGERIES * cfg.policy.surgery_interval
    reference, relative = relative_accuracy(member, twin.accuracies)
    assert relative == 0.0 and 0.0 < reference < 1.0


def test_relative_accuracy_compares_the_steps_both_ran() -> None:
    assert relative_accuracy([1.0, 0.5], [0.5, 0.5, 0.0]) == (0.5, 0.25)
    assert all(math.isnan(v) for v in relative_accuracy([], [0.5]))


def test_twins_continue_exactly_from_their_state() -> None:
    cfg = compose([*TINY_ORGANISM, "policy.training.cohort=2"])
    twins = _twins(cfg, [0, 1], batched=True)
    twins.rollout(2)
    state = copy.deepcopy(twins.state_dict())  # as a checkpoint holds it, not the live tensors
    first = twins.rollout(_SURGERIES)
    again = _twins(cfg, [0, 1], batched=True)
    again.load_state_dict(state)
    assert [e.accuracies for e in again.rollout(_SURGERIES)] == [e.accuracies for e in first]
    assert [o.sgd_step for o in again.organisms] == [o.sgd_step for o in twins.organisms]
    with pytest.raises(ValueError, match=r"policy\.training\.cohort differs"):
        _twins(cfg, [0]).load_state_dict(state)


def test_a_reference_that_prunes_from_dense_is_refused() -> None:
    with pytest.raises(ValueError, match="'gmp' prunes from dense"):
        ReferenceTwins("gmp", lambda rid: build_organism(compose(TINY_ORGANISM), rid), [0], 0)
