"""Helpers shared by the unit-resetting baselines (CBP, ReDo)."""

from __future__ import annotations

import torch

from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.sensors.activity import unit_matrix
from esper.workloads.units import unit_wiring

__all__: list[str] = []


def _resettable_layers(organism: Organism) -> list[str]:
    """Masked layers whose units can be reset (hidden layers with one consuming layer)."""
    names = []
    for name in organism.scalpel.names:
        try:
            unit_wiring(organism.host, name)
        except ValueError:
            continue
        names.append(name)
    return names


def _mean_abs_activation(organism: Organism, step: OrganismStep, name: str) -> torch.Tensor:
    """``mean |h|`` per output unit of ``name`` on the sensing batch, as its units emit it
    (after its normalisation, if any, and its activation; computed where the reading is,
    returned on the CPU)."""
    graph = organism.nervous.graph
    i = graph.names.index(name)
    pre = step.reading.gradients.outputs[name]
    emitted = graph.unit_output(organism.host, i, pre)
    matrix = unit_matrix(emitted, channels_first=graph.kinds[i].startswith("conv"))
    return matrix.abs().mean(dim=0).cpu()
