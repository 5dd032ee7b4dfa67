"""Magnitude pruning down to per-layer counts, shared by ``static`` and ``gmp``."""

from __future__ import annotations

from collections.abc import Mapping

from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism
from esper.workloads.scalpel import topk_among

__all__ = ["prune_to_counts"]


def prune_to_counts(organism: Organism, counts: Mapping[str, int]) -> dict[str, LayerAction]:
    """Prune every layer holding more than ``counts[layer]`` active weights down to it,
    smallest ``|w|`` first (Zhu & Gupta 2017; the one-shot case is classic magnitude pruning)."""
    weights = dict(organism.host.named_parameters())
    actions: dict[str, LayerAction] = {}
    for name, count in counts.items():
        mask = organism.scalpel.mask(name).reshape(-1).cpu()  # decide on the CPU
        excess = int(mask.count_nonzero()) - count
        if excess > 0:
            scores = weights[name].detach().reshape(-1).abs().cpu()
            actions[name] = LayerAction(prune=topk_among(scores, mask, excess, largest=False))
    return actions
