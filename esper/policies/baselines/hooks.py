"""Score hooks: the one thing in which the drop-and-grow baselines differ.

As in ``google-research/rigl``'s ``MaskUpdater``, where SET and RigL differ only in
``get_grow_scores``, a baseline is a pair of hooks ``(organism, step, layer, generator) → flat
scores``: the lowest drop scores among active weights are pruned, the highest grow scores among
inactive weights regrown (:func:`esper.policies.base.swap`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from esper.policies.scores import weight_scores
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ScoreHook", "dense_gradient", "magnitude", "random_scores"]

ScoreHook = Callable[[Organism, OrganismStep, str, torch.Generator], torch.Tensor]
"""``(organism, step, layer, generator) → flat per-weight scores`` of that layer."""


def magnitude(
    organism: Organism, step: OrganismStep, name: str, generator: torch.Generator
) -> torch.Tensor:
    """``|w|``: the drop score of SET, RigL and GMP."""
    return weight_scores(organism, step, name, generator, ("magnitude",))["magnitude"]


def dense_gradient(
    organism: Organism, step: OrganismStep, name: str, generator: torch.Generator
) -> torch.Tensor:
    """``|∂L/∂w|`` of the last SGD step's batch, pruned weights included: RigL's grow score."""
    return weight_scores(organism, step, name, generator, ("gradient",))["gradient"]


def random_scores(
    organism: Organism, step: OrganismStep, name: str, generator: torch.Generator
) -> torch.Tensor:
    """A seeded uniform draw: SET's grow score, and both scores of the ``random`` baseline."""
    return weight_scores(organism, step, name, generator, ("random",))["random"]
