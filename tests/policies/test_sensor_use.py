"""Whether Emrakul's decisions depend on its sensors: the sensitivity measure, and sensor
dropout during exploring decisions."""

from __future__ import annotations

import pytest
import torch

from esper.conf import compose
from esper.policies.base import make_policy
from esper.policies.emrakul import EmrakulPolicy
from esper.policies.emrakul.ablation import SENSOR_GROUPS, blind_columns
from esper.policies.emrakul.sensitivity import sensor_sensitivity
from esper.policies.training import train_policy
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from tests.organisms import TINY_ORGANISM


@pytest.fixture(scope="module")
def stepped() -> tuple[Organism, OrganismStep]:
    """A tiny organism one empty surgery in (its sensors have read something)."""
    organism = build_organism(compose(TINY_ORGANISM))
    organism.reset()
    return organism, organism.step({})


def _reset(policy: EmrakulPolicy, stepped: tuple[Organism, OrganismStep]) -> EmrakulPolicy:
    policy.reset(*stepped)
    return policy


def test_a_random_trunk_moves_with_its_sensors_and_a_blind_policy_does_not(
    stepped: tuple[Organism, OrganismStep],
) -> None:
    policy = _reset(EmrakulPolicy(seed=0), stepped)
    assert policy.general is not None
    with torch.no_grad():  # an untrained General's output layer is zero: give it weights
        policy.general.mean.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    before = policy.generator.get_state()
    for group in ("gradient", "topology"):
        seeing = sensor_sensitivity(policy, *stepped, group)
        assert seeing.specialist > 0 and seeing.general > 0, group
    assert torch.equal(policy.generator.get_state(), before)  # nothing drawn, nothing counted
    assert policy.last is None
    blind = _reset(EmrakulPolicy(blind=("gradient",), seed=0), stepped)
    assert blind.general is not None
    blind.general.load_state_dict(policy.general.state_dict())
    blinded = sensor_sensitivity(blind, *stepped, "gradient")
    assert blinded.specialist == 0.0 and blinded.general == 0.0
    assert sensor_sensitivity(blind, *stepped, "topology").specialist > 0


def test_sensor_sensitivity_refuses_what_it_cannot_measure(
    stepped: tuple[Organism, OrganismStep],
) -> None:
    policy = _reset(EmrakulPolicy(seed=0), stepped)
    with pytest.raises(KeyError, match="valid: gradient"):
        sensor_sensitivity(policy, *stepped, "eyes")
    with pytest.raises(RuntimeError, match="no networks"):
        sensor_sensitivity(EmrakulPolicy(seed=0), *stepped, "gradient")
    policy.discrete = True
    with pytest.raises(ValueError, match="discrete"):
        sensor_sensitivity(policy, *stepped, "gradient")
    no_general = _reset(EmrakulPolicy(use_general=False, seed=0), stepped)
    assert sensor_sensitivity(no_general, *stepped, "gradient").general == 0.0


def test_sensor_dropout_is_validated_by_name() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=f"sensor_dropout={bad} must lie in"):
            EmrakulPolicy(sensor_dropout=bad)
    policy = make_policy("emrakul", sensor_dropout=0.2)  # as policy.params.sensor_dropout=0.2
    assert isinstance(policy, EmrakulPolicy) and policy.sensor_dropout == 0.2
    assert policy.params["sensor_dropout"] == 0.2


def _seen(policy: EmrakulPolicy, stepped: tuple[Organism, OrganismStep]) -> torch.Tensor:
    return policy.inputs(*stepped)[0]


def _dropped(
    policy: EmrakulPolicy, stepped: tuple[Organism, OrganismStep], live: dict[str, torch.Tensor]
) -> frozenset[str]:
    """The groups the last decision saw zeroed; each is zeroed whole (every layer and the
    global state) or not at all."""
    state_names = stepped[1].global_state.names
    assert policy.last is not None
    seen = _seen(policy, stepped)
    out = set()
    for group, cols in live.items():
        if policy.last.obs[:, cols].eq(0).all():
            assert policy.last.state[blind_columns(state_names, [group])].eq(0).all(), group
            out.add(group)
        else:
            assert torch.equal(policy.last.obs[:, cols], seen[:, cols]), group
    return frozenset(out)


def test_exploring_decisions_drop_whole_groups_by_the_policys_own_seed(
    stepped: tuple[Organism, OrganismStep],
) -> None:
    organism, step = stepped
    names = step.observations[organism.scalpel.names[0]].names
    reference = _reset(EmrakulPolicy(seed=0), stepped)
    seen = _seen(reference, stepped)
    live = {g: blind_columns(names, [g]) for g in SENSOR_GROUPS}
    live = {g: cols for g, cols in live.items() if seen[:, cols].ne(0).any()}
    assert {"gradient", "topology"} <= live.keys()
    runs = []
    for _ in range(2):
        policy = _reset(EmrakulPolicy(sensor_dropout=0.3, seed=3), stepped)
        drops = []
        for _ in range(20):
            policy.decide(organism, step, explore=True)
            drops.append(_dropped(policy, stepped, live))
        runs.append(drops)
    assert runs[0] == runs[1]  # deterministic given the seed
    assert frozenset() in runs[0] and any(len(d) > 1 for d in runs[0])
    assert set().union(*runs[0]) == set(live)  # every group is dropped some time


def test_greedy_decisions_never_drop_and_zero_dropout_changes_nothing(
    stepped: tuple[Organism, OrganismStep],
) -> None:
    organism, step = stepped
    plain = _reset(EmrakulPolicy(seed=2), stepped)
    dropping = _reset(EmrakulPolicy(sensor_dropout=0.9, seed=2), stepped)
    for _ in range(3):
        plain.decide(organism, step, explore=False)
        dropping.decide(organism, step, explore=False)
        assert plain.last is not None and dropping.last is not None
        assert torch.equal(plain.last.obs, dropping.last.obs)
        assert torch.equal(plain.last.raw, dropping.last.raw)
    dropping.greedy = True
    dropping.act(organism, step)
    assert dropping.last is not None and torch.equal(dropping.last.obs, plain.last.obs)
    explorers = [_reset(EmrakulPolicy(sensor_dropout=p, seed=2), stepped) for p in (0.0, 0.0)]
    explorers[1].params.pop("sensor_dropout")  # stands for a policy from before the option
    for _ in range(3):  # exploring at p = 0: the same draws, the same decisions
        for policy in explorers:
            policy.decide(organism, step, explore=True)
        first, second = (p.last for p in explorers)
        assert first is not None and second is not None
        assert torch.equal(first.raw, second.raw) and torch.equal(first.obs, second.obs)
    assert torch.equal(explorers[0].generator.get_state(), explorers[1].generator.get_state())


def test_hiding_sensors_leaves_the_organisms_step_untouched(
    stepped: tuple[Organism, OrganismStep],
) -> None:
    """The actors' inputs are copies: blinding or dropping a group must not zero the step's own
    global state (which the event log and the learners read too)."""
    organism, step = stepped
    before = step.global_state.to_tensor().clone()
    _reset(EmrakulPolicy(blind=("gradient",), seed=0), stepped).decide(organism, step)
    _reset(EmrakulPolicy(sensor_dropout=0.9, seed=0), stepped).decide(organism, step)
    assert torch.equal(step.global_state.to_tensor(), before)


def test_training_takes_both_options_from_the_config() -> None:
    cfg = compose([*TINY_ORGANISM, "policy=emrakul", "policy.training.surgeries=4",
                   "policy.training.rollout=4", "+policy.training.learner_params.aux_coef=0.25",
                   "+policy.params.sensor_dropout=0.2"])  # fmt: skip
    result = train_policy(cfg)
    assert result.policy.sensor_dropout == 0.2
    assert result.learner.specialists.params["aux_coef"] == 0.25
    last = result.history[-1]
    assert {"specialists/aux_loss", "specialists/aux_r2"} <= last.keys()
    assert "general/aux_loss" not in last  # the General's MAPPO stays plain unless asked
