"""The seam between acting and learning: episodes from replicas, one central learner, and
replica copies of the policy that act exactly like the learner's policy."""

from __future__ import annotations

import pytest
import torch

from esper.conf import compose
from esper.policies.central import CentralLearner, load_acting_state
from esper.policies.emrakul import EmrakulPolicy
from esper.policies.rollout import rollout
from esper.workloads.factory import build_organism

_BASE = [
    "policy=emrakul",
    "policy.density=0.2",
    "policy.surgery_interval=3",
    "workload.batch_size=16",
    "workload.host.params.hidden=[16,8]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=2",
]


@pytest.mark.parametrize("learner", ["mappo", "qmix"])
def test_episodes_of_two_organisms_then_a_replica_copy_acts_as_the_learner(learner: str) -> None:
    overrides = [*_BASE, f"policy.training.learner={learner}"]
    if learner == "qmix":
        overrides += ["+policy.training.learner_params.batch_size=2"]
    cfg = compose(overrides)
    organisms = [build_organism(cfg, replica_id=r) for r in range(2)]
    steps = [o.reset() for o in organisms]
    policy = EmrakulPolicy(general_interval=2, seed=1)
    policy.reset(organisms[0], steps[0])
    central = CentralLearner(policy, cfg.policy.training, seed=0)

    replica = EmrakulPolicy(general_interval=2, seed=1)  # another process's copy
    load_acting_state(replica, central.acting_state(), seed=7)
    episodes = []
    for organism, step in zip(organisms, steps, strict=True):
        episode, _ = rollout(organism, step, replica, 3)
        assert len(episode.transitions) == 3 and episode.bootstrap is not None
        assert len(episode.general) == 2  # decisions at surgeries 0 and 2
        assert episode.general[0].reward == pytest.approx(
            sum(t.reward for t in episode.transitions[:2])
        )
        episodes.append(episode)
    before = [p.detach().clone() for p in policy.general.parameters()]  # type: ignore[union-attr]
    metrics = central.learn(episodes)
    assert policy.policy_version == 1 and "general/value_loss" in metrics
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before, policy.general.parameters(), strict=True)  # type: ignore[union-attr]
    )

    load_acting_state(replica, central.acting_state(), seed=7)
    assert replica.policy_version == 1
    organism = build_organism(cfg, replica_id=5)
    step = organism.reset()
    for p in (policy, replica):
        p.greedy = True
        p.reset(organism, step)
        p.act(organism, step)
    assert policy.last is not None and replica.last is not None
    assert torch.equal(policy.last.raw, replica.last.raw)
    assert torch.equal(policy.last.general_raw, replica.last.general_raw)  # type: ignore[arg-type]
