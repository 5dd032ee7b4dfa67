"""A long-tailed stream: a few rare classes, each a small share of the samples.

Registered in :data:`~esper.workloads.drift.DRIFTS` as ``imbalance``. Combined with another
drift (``permute_inputs``), every task shows the same long tail under a new input
distribution: what a network and its replay buffer keep of the rare classes of earlier tasks
is what the double-loss experiment measures (:mod:`esper.bench.double_loss`).
"""

from __future__ import annotations

import torch

from esper.workloads.datasets import Source
from esper.workloads.drift import DRIFTS, Drift

__all__ = ["ClassImbalance"]


@DRIFTS.register("imbalance")
class ClassImbalance(Drift):
    """Rare classes: each of ``rare`` makes up ``fraction`` of a balanced source's samples.

    Each drawn row of a rare class is kept with probability ``fraction × num_classes`` and
    otherwise replaced by a row of a common class (drawn from the same distribution), so a
    rare class's share is ``fraction`` and the common classes share the rest equally. It
    replaces rows with untransformed source samples, so it must be a stream's first drift.

    Args:
        rare: The rare class labels.
        fraction: Share of the samples of each rare class, below ``1 / num_classes``.
    """

    name = "imbalance"
    needs_classes = True

    def __init__(self, rare: tuple[int, ...] = (7, 8, 9), fraction: float = 0.02) -> None:
        super().__init__()
        if not rare:
            raise ValueError("drift 'imbalance' needs at least one rare class")
        self.rare = tuple(int(c) for c in rare)
        self.fraction = fraction

    def bind(self, source: Source, seed: int, slot: int = 0) -> None:
        super().bind(source, seed, slot)
        if slot != 0:
            raise ValueError(
                f"drift 'imbalance' must come first in workload.drifts (it is at {slot}): it "
                "replaces rows with untransformed samples"
            )
        classes = source.num_outputs
        if unknown := [c for c in self.rare if not 0 <= c < classes]:
            raise ValueError(
                f"drift 'imbalance': rare classes {unknown} not in dataset {source.name!r}'s "
                f"classes 0..{classes - 1}"
            )
        if len(set(self.rare)) >= classes:
            raise ValueError("drift 'imbalance': at least one class must stay common")
        if not 0.0 < self.fraction < 1.0 / classes:
            raise ValueError(
                f"drift 'imbalance': fraction must be in (0, 1/{classes}), got {self.fraction}"
            )

    @property
    def common(self) -> tuple[int, ...]:
        """The classes that are not rare."""
        return tuple(c for c in range(self.source.num_outputs) if c not in self.rare)

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = self.fraction * self.source.num_outputs
        rare = torch.isin(y, torch.tensor(self.rare))
        drop = rare & (torch.rand(y.shape[0], generator=gen) >= keep)
        if not bool(drop.any()):
            return x, y
        x_new, y_new = self.source.sample(gen, int(drop.sum()), distribution, self.common)
        x, y = x.clone(), y.clone()
        x[drop], y[drop] = x_new, y_new
        return x, y
