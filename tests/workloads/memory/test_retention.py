"""Synchronized retention on a living organism: protected weights are never pruned while the
tail samples they serve are retained; without synchronization the same attack cuts them."""

from __future__ import annotations

import pytest
import torch

from esper.conf import compose
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism


def _organism(synchronized: bool, capacity: int = 80) -> Organism:
    cfg = compose([
        "workload=digits_long_tail",
        "workload.schedule.params.task_length=200",
        f"workload.memory.capacity={capacity}",
        f"workload.memory.synchronized={str(synchronized).lower()}",
        "workload.memory.strategy=class_balanced",  # every class keeps samples in the buffer
        "policy.density=0.5",
        "policy.surgery_interval=20",
    ])  # fmt: skip
    return build_organism(cfg)


def _cut_everything(organism: Organism) -> dict[str, LayerAction]:
    """An attack: prune every active weight of every layer."""
    return {n: LayerAction(prune=organism.scalpel.mask(n).view(-1).nonzero().view(-1))
            for n in organism.scalpel.names}  # fmt: skip


def _served(events) -> dict[tuple[int, str], torch.Tensor]:
    return {(int(e.value), e.layer): torch.tensor(e.indices) for e in events
            if e.action == "serve"}  # fmt: skip


def test_a_protected_weight_is_never_pruned_while_its_samples_are_retained():
    organism = _organism(synchronized=True)
    organism.reset()
    organism.step({})  # the first refresh fills the buffer
    tail = organism.data_side.memory
    for attack in range(2):
        step = organism.step(_cut_everything(organism))
        served = _served(step.events)
        assert {label for label, _ in served} == {7, 8, 9}  # the rare classes, all in the buffer
        for (label, layer), idx in served.items():
            assert idx.numel() > 0 or attack > 0  # later, 2% of few survivors may round to 0
            assert bool(organism.scalpel.mask(layer).view(-1)[idx].all()), (label, layer)
            assert int((tail.members(label)[1] == label).sum()) > 0  # its samples are retained
        protected = [e for e in step.events if e.action == "protect"]
        assert protected and all(e.count == len(e.indices) > 0 for e in protected)
        kept = [e for e in step.events if e.action == "retain" and '"served"' in e.detail]
        assert {int(e.value) for e in kept} == {7, 8, 9}
        survivors = sum(int(organism.scalpel.mask(n).sum()) for n in organism.scalpel.names)
        assert survivors == len(
            set().union(*[{(layer, int(i)) for i in idx} for (_, layer), idx in served.items()])
        )


def test_without_synchronization_the_same_attack_cuts_the_serving_weights():
    organism = _organism(synchronized=False)
    organism.reset()
    organism.step({})
    step = organism.step(_cut_everything(organism))
    served = _served(step.events)
    assert served  # serving weights are still found and recorded
    assert not [e for e in step.events if e.action in ("protect",)]
    assert sum(int(organism.scalpel.mask(n).sum()) for n in organism.scalpel.names) == 0


def test_protection_ends_when_the_samples_leave_the_buffer():
    organism = _organism(synchronized=True)
    organism.reset()
    organism.step({})
    organism.step(_cut_everything(organism))
    memory = organism.data_side.memory
    memory.size = 0  # every sample gone, tail ones included
    step = organism.step(_cut_everything(organism))
    assert not _served(step.events)
    assert sum(int(organism.scalpel.mask(n).sum()) for n in organism.scalpel.names) == 0


def test_a_guarded_surgery_keeps_the_layer_density():
    """A refused prune trims the layer's regrowth by as many: density holds."""
    organism = _organism(synchronized=True)
    organism.reset()
    organism.step({})
    actions = {}
    for name in organism.scalpel.names:
        mask = organism.scalpel.mask(name).view(-1)
        active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
        if inactive.numel() >= 200:  # a layer kept dense has nothing to regrow
            actions[name] = LayerAction(prune=active[:200], regrow=inactive[:200])
    assert actions
    before = organism.scalpel.densities()
    step = organism.step(actions)
    assert [e for e in step.events if e.action == "protect"]
    assert organism.scalpel.densities() == pytest.approx(before)


def test_a_layer_action_can_ask_for_protection_without_synchronization():
    """``LayerAction(protect=True)``: only that layer's serving weights are spared, and the
    samples they serve are locked; the other layers are cut as asked."""
    organism = _organism(synchronized=False)
    organism.reset()
    organism.step({})
    actions = _cut_everything(organism)
    first, *rest = organism.scalpel.names
    actions[first].protect = True
    step = organism.step(actions)
    served = _served(step.events)
    protected = {(e.layer, int(e.value)) for e in step.events if e.action == "protect"}
    assert protected and {layer for layer, _ in protected} == {first}
    kept = int(organism.scalpel.mask(first).sum())
    assert kept == len(set().union(*[set(idx.tolist()) for (_, layer), idx in served.items()
                                     if layer == first]))  # fmt: skip
    assert all(int(organism.scalpel.mask(n).sum()) == 0 for n in rest)
    assert [e for e in step.events if e.action == "retain" and '"served"' in e.detail]
