"""The random surgeon: random drop, random regrowth (the control every criterion must beat).

Same update clock and constant drop fraction as SET, but the pruned weights are also drawn
uniformly at random (seeded) among the active ones.
"""

from __future__ import annotations

from typing import ClassVar

from esper.policies.base import POLICIES
from esper.policies.baselines.drop_and_grow import DropAndGrow
from esper.policies.baselines.hooks import random_scores
from esper.policies.baselines.schedules import ConstantDropFraction, UpdateClock

__all__ = ["RandomSurgery"]


@POLICIES.register("random")
class RandomSurgery(DropAndGrow):
    """Random drop and random regrowth at a constant drop fraction.

    Args:
        fraction: Fraction of active weights replaced per update.
        delta_t: SGD steps between updates.
        t_end: No update at or after this SGD step (``None``: never stop).
        regrow_init: Value of regrown weights.
        seed: Seed of the random scores.
    """

    name: ClassVar[str] = "random"

    def __init__(
        self,
        fraction: float = 0.3,
        delta_t: int = 100,
        t_end: int | None = None,
        regrow_init: str = "zero",
        seed: int = 0,
    ) -> None:
        super().__init__(
            ConstantDropFraction(fraction),
            UpdateClock(delta_t, t_end),
            drop=random_scores,
            grow=random_scores,
            regrow_init=regrow_init,
            seed=seed,
        )
