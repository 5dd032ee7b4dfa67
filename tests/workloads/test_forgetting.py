"""Fisher-guided selective forgetting: shrink-and-perturb of named weights, the ``forget``
action of the organism, and the Specialist's forget decision (gated by the FGSF trigger)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from esper.conf import compose
from esper.policies.emrakul.actions import FORGET_FRACTION, SpecialistAction, layer_action
from esper.policies.emrakul.specialist import ActionCodec
from esper.seeding import generator
from esper.workloads.actions import InvalidActionError, LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.forgetting import shrink_perturb
from tests.organisms import TINY_ORGANISM


def test_shrink_perturb_changes_only_the_named_weights_and_clears_their_momentum() -> None:
    torch.manual_seed(0)
    net = nn.Linear(25, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(8, 25)).sum().backward()
    opt.step()
    before = net.weight.detach().clone().view(-1)
    idx = torch.tensor([0, 7, 7, 99])
    n = shrink_perturb(net, opt, "weight", idx, torch.Generator().manual_seed(1), 0.4, 0.1)
    after = net.weight.detach().view(-1)
    assert n == 3
    changed = (after != before).nonzero().view(-1).tolist()
    assert changed == [0, 7, 99]
    bound = 0.1 / math.sqrt(25)  # p · U(±1/√fan_in)
    assert torch.all((after[[0, 7, 99]] - 0.4 * before[[0, 7, 99]]).abs() <= bound + 1e-7)
    momentum = opt.state[net.weight]["momentum_buffer"].view(-1)
    assert momentum[[0, 7, 99]].eq(0).all() and momentum[1] != 0
    with pytest.raises(IndexError, match="lie in"):
        shrink_perturb(net, opt, "weight", [100], torch.Generator())
    with pytest.raises(ValueError, match="shrink"):
        shrink_perturb(net, opt, "weight", [1], torch.Generator(), shrink=1.5)


def test_the_organism_forgets_without_changing_any_mask() -> None:
    organism = build_organism(compose(TINY_ORGANISM))
    organism.reset()
    name = organism.scalpel.names[0]
    mask = organism.scalpel.mask(name).view(-1)
    active = mask.nonzero().view(-1)[:5]
    weight = dict(organism.host.named_parameters())[name]
    before = weight.detach().clone().view(-1)
    step = organism.step({name: LayerAction(forget=active)})
    events = [e for e in step.events if e.action == "forget"]
    assert len(events) == 1 and sorted(events[0].indices) == sorted(active.tolist())
    assert torch.equal(organism.scalpel.mask(name).view(-1), mask)
    assert not torch.equal(weight.detach().view(-1)[active], before[active])
    with pytest.raises(InvalidActionError, match="forget indices"):
        organism.step({name: LayerAction(forget=[mask.numel()])})


def test_the_forget_bit_round_trips_through_the_codec() -> None:
    codec = ActionCodec()
    for forget in (False, True):
        action = SpecialistAction(turnover=0.1, forget=forget, heat=not forget)
        decoded = codec.decode(codec.encode(action))
        assert (decoded.forget, decoded.heat) == (forget, not forget)


def test_a_specialist_forgets_the_most_rigid_weights_only_when_the_trigger_fired() -> None:
    organism = build_organism(compose(TINY_ORGANISM))
    step = organism.reset()
    name = organism.scalpel.names[0]
    gen = generator(0, "test")
    action = SpecialistAction(turnover=0.0, forget=True)
    quiet = dataclasses.replace(step, info={**step.info, "fgsf": []})
    assert layer_action(action, organism, quiet, name, gen).forget.numel() == 0
    fired = dataclasses.replace(step, info={**step.info, "fgsf": [name]})
    chosen = layer_action(action, organism, fired, name, gen).forget
    mask = organism.scalpel.mask(name).view(-1).cpu()
    fisher = step.reading.gradients.layers[name].fisher.reshape(-1).cpu()
    assert chosen.numel() == round(FORGET_FRACTION * int(mask.sum()))
    assert mask[chosen].all()  # only active weights are loosened
    rest = mask.clone()
    rest[chosen] = False
    assert fisher[chosen].min() >= fisher[rest].max()  # ... the most rigid ones
    no = SpecialistAction(turnover=0.0, forget=False)
    assert layer_action(no, organism, fired, name, gen).forget.numel() == 0
