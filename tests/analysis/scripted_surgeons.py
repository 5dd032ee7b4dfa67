"""Scripted surgeons that perform one emergent strategy on purpose, for the detectors' planted
tests (:mod:`tests.analysis.test_detectors_real`).

They read ground truth a learned surgeon never sees (the stream's recurring pattern) or act on
the organism's own sensors by rule; their surgeries go through the real organism and the real
event writer like any policy's.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from esper.policies.base import Policy
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel import topk_among

__all__ = ["GhostSurgeon", "SparingSurgeon"]


class GhostSurgeon(Policy):
    """Puts the leaving distribution's circuit to sleep and wakes exactly it on the return.

    At the first surgery after the stream moves from distribution ``d`` to ``e`` (the
    recurring schedule's ``pattern[task_index % len(pattern)]``), each layer prunes ``share``
    of its active weights (drawn at random: ``d``'s ghost circuit) and regrows, as many,
    ``e``'s ghost circuit when ``e`` was seen before, else fresh weights never part of a
    circuit. Densities stay constant; between switches nothing is done. The circuits are
    index sets, what the event log shows: the masked mechanism zeroes pruned weights, so they
    come back at zero (RigL's regrowth init), not with their old values.

    Args:
        pattern: The recurring schedule's pattern (``workload.schedule.params.pattern``).
        share: Fraction of each layer's active weights put to sleep at a switch.
        seed: Seed of the draws.
    """

    name: ClassVar[str] = "scripted_ghost"

    def __init__(self, pattern: tuple[int, ...], share: float = 0.25, seed: int = 0) -> None:
        if not 0.0 < share < 1.0:
            raise ValueError(f"share={share} must lie in (0, 1)")
        self.pattern = pattern
        self.share = share
        self.generator = torch.Generator().manual_seed(seed)
        self.current: int | None = None
        self.circuits: dict[int, dict[str, torch.Tensor]] = {}
        self.switches = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Start at the first task's distribution, with no circuit asleep."""
        self.current = self._distribution(first)
        self.circuits, self.switches = {}, 0

    def _distribution(self, step: OrganismStep) -> int:
        return self.pattern[int(step.info["task_index"]) % len(self.pattern)]

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """At a switch, swap the leaving distribution's circuit for the arriving one's."""
        arriving = self._distribution(step)
        leaving, self.current = self.current, arriving
        if leaving is None or arriving == leaving:
            return {}
        self.switches += 1
        actions: dict[str, LayerAction] = {}
        sleeping: dict[str, torch.Tensor] = {}
        for name in organism.scalpel.names:
            mask = organism.scalpel.mask(name).reshape(-1).cpu()
            active = mask.nonzero().view(-1)
            k = max(1, round(self.share * active.numel()))
            prune = active[torch.randperm(active.numel(), generator=self.generator)[:k]]
            ghost = self.circuits.get(arriving, {}).get(name)
            if ghost is None:  # a first visit: fresh weights outside every circuit
                free = ~mask
                for circuit in self.circuits.values():
                    free[circuit[name]] = False
                pool = free.nonzero().view(-1)
                ghost = pool[torch.randperm(pool.numel(), generator=self.generator)[:k]]
            sleeping[name] = prune
            actions[name] = LayerAction(prune=prune, regrow=ghost)
        self.circuits[leaving] = sleeping
        return actions


class SparingSurgeon(Policy):
    """Prunes every layer by magnitude under a steady pressure, except the layer whose active
    weights hold the most Fisher information, which it spares.

    At each surgery every layer is told its new density (a ``budget`` event, so the sensors'
    Fisher trace of every layer is on the log). The layer of largest Fisher per active weight
    (the sensor reading's ``fisher_trace ÷ active``; the first surgery decides, and the layer
    stays spared) keeps its weights; every other layer loses ``rate`` of its active weights,
    smallest ``|w|`` first, until it reaches ``floor``.

    Args:
        rate: Fraction of a pruned layer's active weights removed per surgery.
        floor: Density below which a layer is not pruned further.
    """

    name: ClassVar[str] = "scripted_sparing"

    def __init__(self, rate: float = 0.03, floor: float = 0.05) -> None:
        if not 0.0 < rate < 1.0 or not 0.0 < floor < 1.0:
            raise ValueError(f"rate={rate} and floor={floor} must lie in (0, 1)")
        self.rate = rate
        self.floor = floor
        self.spared: str | None = None

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Nothing is spared until the first surgery reads the sensors."""
        self.spared = None

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Prune every layer but the spared one by ``rate``; tell each its density."""
        scalpel = organism.scalpel
        if self.spared is None:
            stats = step.reading.gradients.layers
            self.spared = max(
                scalpel.names, key=lambda n: stats[n].fisher_trace / max(stats[n].active, 1)
            )
        weights = dict(organism.host.named_parameters())
        actions: dict[str, LayerAction] = {}
        for name in scalpel.names:
            mask = scalpel.mask(name).reshape(-1).cpu()
            active = int(mask.count_nonzero())
            k = 0 if name == self.spared else round(self.rate * active)
            k = min(k, max(0, active - round(self.floor * mask.numel())))
            scores = weights[name].detach().reshape(-1).abs().cpu()
            prune = topk_among(scores, mask, k, largest=False)
            actions[name] = LayerAction(prune=prune, target_density=(active - k) / mask.numel())
        return actions
