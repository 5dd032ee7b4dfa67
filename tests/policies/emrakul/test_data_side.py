"""Emrakul's data-side actions: a Specialist's protect bit (synchronized retention of its
layer: spare the weights serving tail classes, lock the samples they serve) and the Surgeon
General's data action (the buffer's refresh share and selection rule). Both reach the organism,
round-trip through checkpoints, and policies without them are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from esper.conf import compose
from esper.events import SurgicalEvent
from esper.policies.base import make_policy
from esper.policies.checkpoints import load_policy, save_policy
from esper.policies.emrakul import ActionCodec, EmrakulPolicy, SpecialistAction, SurgeonGeneral
from esper.policies.evaluation import evaluate_policy
from esper.policies.learners import LEARNERS
from esper.policies.training import train_policy
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism

_LONG_TAIL = [
    "workload=digits_long_tail",
    "workload.schedule.params.task_length=200",
    "workload.memory.capacity=80",
    "workload.memory.strategy=class_balanced",  # every class keeps samples in the buffer
    "policy=emrakul",
    "policy.density=0.5",
    "policy.surgery_interval=20",
]
_PROTECT_BIT = ActionCodec.CONTINUOUS + 2


def test_the_codec_carries_the_protect_bit_only_when_asked() -> None:
    plain, protecting = ActionCodec(), ActionCodec(protect=True)
    assert (plain.width, protecting.width) == (ActionCodec.WIDTH, ActionCodec.WIDTH + 1)
    for protect in (True, False):
        action = SpecialistAction(turnover=0.1, protect=protect)
        assert protecting.decode(protecting.encode(action)).protect is protect
    assert not plain.decode(plain.encode(SpecialistAction(turnover=0.1))).protect
    with pytest.raises(ValueError, match="needs a codec with the protect bit"):
        plain.encode(SpecialistAction(protect=True))
    with pytest.raises(ValueError, match=rf"shape \({ActionCodec.WIDTH},\)"):
        plain.decode(torch.zeros(protecting.width))


def _acting(protect: bool) -> tuple[Organism, EmrakulPolicy]:
    organism = build_organism(compose([*_LONG_TAIL, "workload.memory.synchronized=false"]))
    policy = make_policy("emrakul", protect=True, greedy=True)
    assert isinstance(policy, EmrakulPolicy)
    first = organism.reset()
    policy.reset(organism, first)
    assert policy.specialist is not None
    with torch.no_grad():  # every Specialist's protect bit on (or off)
        policy.specialist.head.bias[_PROTECT_BIT] = 20.0 if protect else -20.0
    return organism, policy


@pytest.mark.parametrize("protect", [True, False])
def test_the_protect_bit_reaches_the_organism(protect: bool) -> None:
    organism, policy = _acting(protect)
    step, locked = organism.current(), 0
    for _ in range(6):
        actions = policy.act(organism, step)
        assert all(a.protect is protect for a in actions.values())
        step = organism.step(actions)
        locked += sum(1 for e in step.events if e.action == "retain" and '"served"' in e.detail)
    assert (locked > 0) is protect  # samples locked for their serving weights only on request


def test_a_protecting_policy_round_trips_through_its_checkpoint(tmp_path: Path) -> None:
    cfg = compose([*_LONG_TAIL, "+policy.params.protect=true", "+policy.params.data_action=true",
                   "policy.training.surgeries=4",
                   "policy.training.rollout=2", "workload.host.params.hidden=[16,8]"])  # fmt: skip
    result = train_policy(cfg)
    assert isinstance(result.policy, EmrakulPolicy) and result.policy.codec.protect
    loaded = load_policy(save_policy(tmp_path / "protect.pt", result))
    assert isinstance(loaded, EmrakulPolicy) and loaded.codec.width == ActionCodec.WIDTH + 1
    assert loaded.general is not None and loaded.general.data_action
    organism = build_organism(cfg)
    step = organism.reset()
    original = result.policy
    original.greedy = True
    for policy in (loaded, original):
        policy.reset(organism, step)
        policy.act(organism, step)
    assert loaded.last is not None and original.last is not None
    assert torch.equal(loaded.last.raw, original.last.raw)


def test_the_discrete_table_has_no_protect_bit() -> None:
    with pytest.raises(ValueError, match="discrete table"):
        make_policy("emrakul", protect=True, discrete=True)
    _, policy = _acting(True)
    with pytest.raises(ValueError, match="learner=mappo"):
        LEARNERS["qmix"](policy)


def test_the_general_decodes_a_refresh_share_and_a_rule() -> None:
    plain = SurgeonGeneral(state_dim=5, max_layers=3)
    general = SurgeonGeneral(state_dim=5, max_layers=3, data_action=True)
    rules = SurgeonGeneral.STRATEGIES
    assert general.action_dim == plain.action_dim + 1 + len(rules)
    raw = torch.zeros(general.action_dim)
    raw[3] = 1.0  # the annealing gain logit stays where it was
    raw[5 + rules.index("forgetting")] = 2.0
    data = general.data(raw)
    assert data is not None and data.strategy == "forgetting"
    assert data.refresh == pytest.approx(0.5)
    assert general.amplitude_gain(raw) == plain.amplitude_gain(raw[: plain.action_dim])
    assert plain.data(raw[: plain.action_dim]) is None
    untrained = SurgeonGeneral(state_dim=5, max_layers=3, data_action=True, strategy="gradient")
    choice = untrained.data(untrained.distribution(torch.zeros(1, 5)).mode()[0])
    assert choice is not None and choice.strategy == "gradient" and choice.refresh > 0.9


def test_the_generals_data_action_reaches_the_buffer() -> None:
    cfg = compose([*_LONG_TAIL, "workload.memory.synchronized=false"])
    policy = make_policy("emrakul", data_action=True, greedy=True, general_interval=2)
    assert isinstance(policy, EmrakulPolicy)
    organism = build_organism(cfg)
    policy.reset(organism, organism.reset())
    assert policy.general is not None
    with torch.no_grad():  # choose "forgetting", refresh a tenth of the buffer
        rules = SurgeonGeneral.STRATEGIES
        policy.general.mean.bias[policy.max_layers + 1] = -2.2
        policy.general.mean.bias[policy.max_layers + 2 + rules.index("forgetting")] = 5.0
    events: list[SurgicalEvent] = []
    evaluate_policy(build_organism(cfg), policy, 4, on_events=events.extend)
    data = policy.data_action()
    assert data is not None and data.strategy == "forgetting"
    assert data.refresh == pytest.approx(0.1, abs=0.01)
    refreshes = [e for e in events if e.action in ("retain", "evict") and e.detail]
    assert refreshes and all('"strategy": "forgetting"' in e.detail for e in refreshes)
