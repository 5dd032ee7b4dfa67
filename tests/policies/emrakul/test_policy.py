"""The ``emrakul`` policy: decentralized Specialists, exact budgets on an organism, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from esper.conf import compose
from esper.policies.base import POLICIES, make_policy
from esper.policies.emrakul import ActionCodec, EmrakulPolicy, SpecialistAction, SpecialistActor
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from tests.organisms import TINY_ORGANISM

_BASE = TINY_ORGANISM


@pytest.fixture(scope="module")
def organism() -> Organism:
    return build_organism(compose(_BASE))


def test_specialist_is_decentralized() -> None:
    """Changing other layers' observations leaves layer i's action distribution unchanged."""
    torch.manual_seed(0)
    actor = SpecialistActor(obs_dim=12, max_layers=6)
    obs = torch.randn(5, 12)
    ids = torch.arange(5)
    base = actor.distribution(obs, ids)
    for i in range(5):
        other = obs.clone()
        rows = [j for j in range(5) if j != i]
        other[rows] = torch.randn(4, 12) * 5
        dist = actor.distribution(other, ids)
        assert torch.equal(dist.mean[i], base.mean[i])
        assert torch.equal(dist.logits[i], base.logits[i])  # type: ignore[index]
        assert torch.equal(dist.log_std[i], base.log_std[i])
        # ... and layer i's own observation does matter.
        mine = obs.clone()
        mine[i] += 1.0
        assert not torch.equal(actor.distribution(mine, ids).mean[i], base.mean[i])
    # Fewer agents in the batch: still the same distribution for layer 0.
    alone = actor.distribution(obs[:1], ids[:1])
    assert torch.allclose(alone.mean[0], base.mean[0])


def test_codec_round_trip() -> None:
    codec = ActionCodec(max_turnover=0.5, sedation_steps=7)
    action = SpecialistAction(
        turnover=0.15,
        prune_mix=(1.0, 0.0, 0.0, 0.0, 0.0),
        regrow_mix=(0.0, 0.0, 1.0),
        tau=0.02,
        heat=True,
        sedation=0.4,
        sedation_steps=7,
    )
    back = codec.decode(codec.encode(action))
    assert back.turnover == pytest.approx(0.15, abs=1e-4)
    assert back.tau == pytest.approx(0.02, rel=1e-4)
    assert back.sedation == pytest.approx(0.4, abs=1e-4) and back.sedation_steps == 7
    assert back.heat and back.prune_mix[0] > 0.9 and back.regrow_mix[2] > 0.85
    assert codec.decode(codec.encode(SpecialistAction())).sedation == 1.0


def test_registered_and_validated() -> None:
    assert POLICIES["emrakul"] is EmrakulPolicy
    with pytest.raises(ValueError, match="budget"):
        make_policy("emrakul", budget=1.5)
    with pytest.raises(Exception, match="bogus"):
        make_policy("emrakul", bogus=1)


def test_policy_keeps_the_budget_and_checkpoints(organism: Organism) -> None:
    org = organism
    step = org.reset()
    policy = make_policy("emrakul", general_interval=2, seed=3)
    assert isinstance(policy, EmrakulPolicy)
    policy.reset(org, step)
    budget = round(0.2 * sum(org.scalpel.numel(n) for n in org.scalpel.names))
    for t in range(3):
        actions = policy.act(org, step)
        assert policy.last is not None and set(actions) == set(org.scalpel.names)
        assert (policy.last.general_raw is not None) == (t % 2 == 0)
        assert policy.last.targets is not None and sum(policy.last.targets.values()) == budget
        step = org.step(actions)
        budget_events = {e.layer: e.value for e in step.events if e.action == "budget"}
        if t % 2 == 0:  # the General's new allocation is logged, one budget event per layer
            assert budget_events == {
                n: policy.last.targets[n] / org.scalpel.numel(n) for n in org.scalpel.names
            }
        else:
            assert budget_events == {}
        kept = sum(int(org.scalpel.mask(n).sum()) for n in org.scalpel.names)
        assert kept == budget
        assert step.info["densities"] == {
            n: policy.last.targets[n] / org.scalpel.numel(n) for n in org.scalpel.names
        }
    policy.bump_version()
    state = policy.state_dict()
    clone = make_policy("emrakul", **state["params"])
    clone.load_state_dict(state)
    assert isinstance(clone, EmrakulPolicy) and clone.policy_version == 1
    clone.greedy = policy.greedy = True
    clone.reset(org, step)
    policy.reset(org, step)
    a, b = policy.act(org, step), clone.act(org, step)
    assert policy.last is not None and clone.last is not None
    assert torch.equal(policy.last.raw, clone.last.raw)
    for name in a:
        assert torch.equal(torch.as_tensor(a[name].prune), torch.as_tensor(b[name].prune))


def test_heat_burst_raises_tau_and_turnover_for_a_few_surgeries(organism: Organism) -> None:
    policy = EmrakulPolicy(heat_surgeries=2, heat_tau=10.0, heat_turnover=2.0)
    hot = SpecialistAction(turnover=0.1, tau=0.01, heat=True)
    calm = SpecialistAction(turnover=0.1, tau=0.01)
    first = policy._heated("l", hot)
    second = policy._heated("l", calm)
    third = policy._heated("l", calm)
    assert first.tau == pytest.approx(0.1) and first.turnover == pytest.approx(0.2)
    assert second.tau == pytest.approx(0.1)
    assert third == calm


@pytest.mark.parametrize("mechanism_heat", [True, False])
def test_a_heat_burst_heats_the_mechanisms_temperature_and_cools_it_after(
    mechanism_heat: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a temperature mechanism the heat decision acts on the mask: the burst's layers run
    at ``heat_tau`` × their configured temperature for ``heat_surgeries`` surgeries, then return
    to it, each change a ``temperature`` event; ``mechanism_heat=False`` leaves it alone."""
    org = build_organism(compose([*_BASE, "workload.scalpel.mechanism.name=hard_concrete"]))
    step = org.reset()
    names = org.scalpel.names
    configured = {n: org.scalpel.temperature(n) for n in names}
    policy = EmrakulPolicy(heat_surgeries=2, heat_tau=4.0, greedy=True,
                           mechanism_heat=mechanism_heat)  # fmt: skip
    policy.reset(org, step)
    decode = policy.codec.decode
    monkeypatch.setattr(  # the Specialists ask for heat at the first surgery only
        policy.codec, "decode",
        lambda raw: dataclasses.replace(decode(raw), heat=policy.episode.surgery == 0),
    )  # fmt: skip
    temperatures, heats, rows = [], [], 0
    for _ in range(4):
        actions = policy.act(org, step)
        heats.append({a.heat for a in actions.values()})
        step = org.step(actions)
        temperatures.append({n: org.scalpel.temperature(n) for n in names})
        rows += sum(e.action == "temperature" for e in step.events)
    assert heats == [{True}, {True}, {False}, {False}]
    factor = 4.0 if mechanism_heat else 1.0
    for n in names:
        seen = [t[n] / configured[n] for t in temperatures]
        assert seen == pytest.approx([factor, factor, 1.0, 1.0])
    assert rows == (2 * len(names) if mechanism_heat else 0)  # heated once, cooled once


def test_a_heated_layer_cools_when_heat_stops_acting_mid_burst() -> None:
    org = build_organism(compose([*_BASE, "workload.scalpel.mechanism.name=hard_concrete"]))
    step = org.reset()
    name = org.scalpel.names[0]
    configured = org.scalpel.temperature(name)
    policy = EmrakulPolicy(heat_surgeries=3, heat_tau=4.0, greedy=True)
    policy.reset(org, step)
    policy.episode.heat_left = {n: 3 for n in org.scalpel.names}  # a burst under way
    step = org.step(policy.act(org, step))
    assert org.scalpel.temperature(name) == pytest.approx(4.0 * configured)
    policy.mechanism_heat = False  # the burst goes on (τ, turnover) but no longer on the mask
    actions = policy.act(org, step)
    assert actions[name].heat and actions[name].tau_factor == 1.0
    org.step(actions)
    assert org.scalpel.temperature(name) == pytest.approx(configured)


def test_heat_leaves_a_mechanism_without_temperature_alone(organism: Organism) -> None:
    step = organism.reset()
    policy = EmrakulPolicy(greedy=True)
    policy.reset(organism, step)
    assert all(a.tau_factor is None and a.tau is None for a in policy.act(organism, step).values())


def test_harmonic_annealing_moves_the_organism_density(organism: Organism) -> None:
    org = organism
    step = org.reset()
    total = sum(org.scalpel.numel(n) for n in org.scalpel.names)
    policy = EmrakulPolicy(amplitude=0.05, period=4, greedy=True, budget=0.2)
    policy.reset(org, step)
    densities = []
    for _ in range(4):
        step = org.step(policy.act(org, step))
        densities.append(sum(int(org.scalpel.mask(n).sum()) for n in org.scalpel.names) / total)
    # The untrained General's gain is 2·sigmoid(0) = 1: d_t = 0.2 + 0.05 sin(2π t / 4).
    assert densities == pytest.approx([0.2, 0.25, 0.2, 0.15], abs=1.0 / total)


def test_exploration_noise_starts_where_the_params_say(organism: Organism) -> None:
    step = organism.reset()
    policy = make_policy("emrakul", specialist_log_std=-1.5, general_log_std=-2.5)
    assert isinstance(policy, EmrakulPolicy)
    policy.reset(organism, step)
    assert policy.specialist is not None and policy.general is not None
    assert torch.all(policy.specialist.log_std == -1.5)
    assert torch.all(policy.general.log_std == -2.5)
    default = make_policy("emrakul")
    assert isinstance(default, EmrakulPolicy)
    default.reset(organism, step)
    assert default.specialist is not None and torch.all(default.specialist.log_std == -0.5)


def test_general_bound_is_a_trust_region_around_the_start_allocation(organism: Organism) -> None:
    with pytest.raises(ValueError, match="general_bound"):
        make_policy("emrakul", general_bound=0.0)
    step = organism.reset()
    names = organism.scalpel.names
    start = {n: organism.scalpel.density(n) for n in names}
    extreme = torch.tensor([4.0] + [-4.0] * (len(names) - 1))
    ratios = {}
    for bound in (None, 0.25):
        policy = EmrakulPolicy(general_bound=bound, greedy=True, budget=0.2)
        policy.reset(organism, step)
        policy.act(organism, step)
        policy.episode.logits = extreme.clone()
        targets = policy._targets(organism)
        assert sum(targets.values()) == round(0.2 * sum(organism.scalpel.numel(n) for n in names))
        ratios[bound] = [targets[n] / organism.scalpel.numel(n) / start[n] for n in names]
    # Clipped logits move a layer by at most e^{±b} before the budget's renormalisation,
    # so by at most e^{±2b} after it; unclipped ones starve every layer but the first.
    assert all(torch.e**-0.5 - 0.01 <= r <= torch.e**0.5 + 0.01 for r in ratios[0.25])
    assert min(ratios[None]) < 0.2 and max(ratios[None]) > 2.0
