"""The spike term against a no-surgery control: the same upcoming batches, before and after."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from esper.conf import compose
from esper.workloads.actions import LayerAction
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_organism
from esper.workloads.spike import probe_loss, stacked_probe_losses
from tests.organisms import TINY_ORGANISM

# Every surgery lands on a drift: tasks are as long as the surgery interval (K = 4).
AT_DRIFT = [*TINY_ORGANISM, "workload.schedule.params.task_length=4"]


def test_peek_does_not_consume_the_stream() -> None:
    organism = build_organism(compose(TINY_ORGANISM))
    peeked = organism.stream.peek(3)
    drawn = [organism.stream.next_batch() for _ in range(3)]
    for a, b in zip(peeked, drawn, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.step == b.step


def test_a_drift_is_not_charged_to_a_surgery_that_changed_nothing() -> None:
    organism = build_organism(compose(AT_DRIFT))
    organism.reset()
    for _ in range(3):
        step = organism.step({})
        assert step.info["task_index"] > 0
        assert step.components is not None and step.components.spike == 0.0


def test_a_damaging_surgery_spikes() -> None:
    organism = build_organism(compose(AT_DRIFT))
    organism.reset()
    name = organism.scalpel.names[0]
    active = organism.scalpel.mask(name).view(-1).nonzero().view(-1)
    step = organism.step({name: LayerAction(prune=active[: int(0.9 * active.numel())])})
    assert step.components is not None and step.components.spike > 0.0


def test_stacked_probe_losses_refuse_probes_of_other_counts_or_sizes() -> None:
    cfg = compose(TINY_ORGANISM)
    organisms = [build_organism(cfg, r) for r in range(2)]
    template = Cohort(organisms).template
    hosts = [o.host for o in organisms]
    probes = [o.stream.peek(2) for o in organisms]
    kind, device = organisms[0].kind, organisms[0].device
    losses = stacked_probe_losses(template, hosts, probes, kind, device)
    for o, p, loss in zip(organisms, probes, losses, strict=True):
        assert math.isclose(loss, probe_loss(o.host, p, kind, device), rel_tol=1e-5)
    with pytest.raises(ValueError, match="one count and one size of batches"):
        stacked_probe_losses(template, hosts, [probes[0], probes[1][:1]], kind, device)
    short = [probes[1][0], replace(probes[1][1], x=probes[1][1].x[:3], y=probes[1][1].y[:3])]
    with pytest.raises(ValueError, match="one count and one size of batches"):
        stacked_probe_losses(template, hosts, [probes[0], short], kind, device)
    with pytest.raises(ValueError, match="2 probes for 1 hosts"):
        stacked_probe_losses(template, hosts[:1], probes, kind, device)
    assert all(math.isnan(v) for v in stacked_probe_losses(template, hosts, [[], []], kind, device))
