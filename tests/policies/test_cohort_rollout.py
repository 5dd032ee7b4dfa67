"""Emrakul rolled out on a cohort decides, trains and is scored exactly as on each member alone:
the same observations, the same sampled actions and their log-probabilities, the same rewards
and events, episode by episode (the cohort's readings, decisions and scoring against the lone
organism's)."""

from __future__ import annotations

import math

import torch

from esper.conf import compose
from esper.policies.base import make_policy
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.rollout import cohort_rollout, rollout
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from tests.organisms import TINY_ORGANISM

_CFG = ["policy=emrakul", *TINY_ORGANISM]
_MEMBERS, _LENGTH, _TOL = 3, 2, 1e-4


def _policy(index: int, organism: Organism, step: OrganismStep) -> EmrakulPolicy:
    policy = make_policy("emrakul", seed=100 + index)
    assert isinstance(policy, EmrakulPolicy)
    policy.reset(organism, step)
    return policy


def test_a_cohort_rollout_is_each_members_lone_rollout() -> None:
    cfg = compose(_CFG)
    alone = [build_organism(cfg, r) for r in range(_MEMBERS)]
    cohort = Cohort([build_organism(cfg, r) for r in range(_MEMBERS)])
    lone_steps = [o.reset() for o in alone]
    steps = cohort.reset()
    lone_policies = [
        _policy(i, o, s) for i, (o, s) in enumerate(zip(alone, lone_steps, strict=True))
    ]
    policies = [
        _policy(i, o, s) for i, (o, s) in enumerate(zip(cohort.members, steps, strict=True))
    ]
    for _ in range(2):  # two episodes: the second starts from where the first left both
        runs = zip(alone, lone_steps, lone_policies, strict=True)
        lone = [rollout(o, s, p, _LENGTH) for o, s, p in runs]
        together = cohort_rollout(cohort, steps, policies, _LENGTH)
        for (episode_a, last_a), (episode_c, last_c) in zip(lone, together, strict=True):
            assert len(episode_a.transitions) == len(episode_c.transitions) == _LENGTH
            for a, c in zip(episode_a.transitions, episode_c.transitions, strict=True):
                assert torch.allclose(a.obs, c.obs, atol=_TOL, equal_nan=True)  # readings
                assert torch.allclose(a.state, c.state, atol=_TOL, equal_nan=True)
                assert torch.allclose(a.action, c.action, atol=_TOL)  # decisions
                assert torch.allclose(a.log_prob, c.log_prob, atol=_TOL)
                assert math.isclose(a.reward, c.reward, abs_tol=_TOL)  # scoring
            assert [(e.layer, e.action, e.count) for e in last_a.events] == [
                (e.layer, e.action, e.count) for e in last_c.events
            ]
        lone_steps = [last for _, last in lone]
        steps = [last for _, last in together]
    assert any(e.action == "regrow" for e in steps[0].events)  # surgery really happened
