"""The FGSF heuristic forgets the most rigid weights of the layers the trigger names, ranked by
the contact-aware Fisher when the sensors give it (an agent's decision-critical states)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from esper.conf import compose
from esper.policies.base import make_policy
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.sensors.fisher import FGSFSignal, rigid_weights
from tests.policies.baselines.test_baselines import started
from tests.workloads.rl.test_agent import _TINY as AGENT


def _firing(step: OrganismStep, layers: tuple[str, ...], network: bool = False) -> OrganismStep:
    reading = dataclasses.replace(step.reading, fgsf=FGSFSignal(network, layers))
    return dataclasses.replace(step, reading=reading)


def test_nothing_is_forgotten_while_the_trigger_is_quiet() -> None:
    org, policy, step = started("fgsf", density=0.1, fraction=0.1)
    step = org.step(policy.act(org, step))  # the one pruning
    quiet = _firing(step, ())
    assert policy.act(org, quiet) == {}


@pytest.mark.parametrize("use_contact", [True, False])
def test_a_firing_layer_loses_its_most_rigid_active_weights(use_contact: bool) -> None:
    org, policy, step = started("fgsf", density=0.1, fraction=0.1, use_contact=use_contact)
    step = org.step(policy.act(org, step))
    layer = org.scalpel.names[0]
    actions = policy.act(org, _firing(step, (layer,)))
    assert list(actions) == [layer]
    stats = step.reading.gradients.layers[layer]
    assert stats.contact_fisher is not None  # the sensors report it by default
    fisher = stats.contact_fisher if use_contact else stats.fisher
    expected = rigid_weights(fisher, 0.1, org.scalpel.mask(layer))
    forget = torch.as_tensor(actions[layer].forget)
    assert torch.equal(forget, expected) and len(forget) > 0
    assert org.scalpel.mask(layer).view(-1)[forget].all()  # active weights only
    after = org.step(actions)
    (event,) = [e for e in after.events if e.action == "forget"]
    assert event.layer == layer and event.count == len(forget)


def test_an_agent_forgets_by_its_decision_critical_fisher() -> None:
    org: Organism = build_organism(compose(AGENT))
    policy = make_policy("fgsf", density=0.3, fraction=0.1)
    step = org.reset()
    policy.reset(org, step)
    step = org.step(policy.act(org, step))
    actions = policy.act(org, _firing(step, (), network=True))  # every layer
    assert set(actions) == set(org.scalpel.names)
    for name, action in actions.items():
        stats = step.reading.gradients.layers[name]
        assert stats.contact_fisher is not None
        expected = rigid_weights(stats.contact_fisher, 0.1, org.scalpel.mask(name))
        assert torch.equal(torch.as_tensor(action.forget), expected)
    assert not org.step(actions).info["diverged"]
