"""SET: Sparse Evolutionary Training (Mocanu et al. 2018, Nature Communications 9:2383).

Every ``ΔT`` SGD steps, each layer drops the fraction ζ of its active weights with the smallest
``|w|`` and regrows as many inactive weights chosen uniformly at random (seeded). The paper drops
the smallest positive and the largest negative weights separately; like
``google-research/rigl``'s ``SET`` mask updater we rank by ``|w|`` and start regrown weights at
zero, so SET differs from RigL only in its grow score (and its constant drop fraction).
"""

from __future__ import annotations

from typing import ClassVar

from esper.policies.base import POLICIES
from esper.policies.baselines.drop_and_grow import DropAndGrow
from esper.policies.baselines.hooks import magnitude, random_scores
from esper.policies.baselines.schedules import ConstantDropFraction, UpdateClock

__all__ = ["SET"]


@POLICIES.register("set")
class SET(DropAndGrow):
    """SET (Mocanu et al. 2018): magnitude drop, random regrowth, constant drop fraction ζ.

    Args:
        zeta: ζ, the fraction of active weights replaced per update (paper: 0.3).
        delta_t: SGD steps between updates (the paper updates once per epoch).
        t_end: No update at or after this SGD step (``None``: never stop, as suits a stream).
        regrow_init: Value of regrown weights (``zero`` as rigl's SET; ``kaiming`` as Mocanu).
        seed: Seed of the random grow scores.
    """

    name: ClassVar[str] = "set"

    def __init__(
        self,
        zeta: float = 0.3,
        delta_t: int = 100,
        t_end: int | None = None,
        regrow_init: str = "zero",
        seed: int = 0,
    ) -> None:
        super().__init__(
            ConstantDropFraction(zeta),
            UpdateClock(delta_t, t_end),
            drop=magnitude,
            grow=random_scores,
            regrow_init=regrow_init,
            seed=seed,
        )
