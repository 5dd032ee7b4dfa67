"""RigL: the Rigged Lottery (Evci et al. 2020, arXiv 1911.11134).

Every ``ΔT`` SGD steps until ``T_end``, each layer drops the ``⌊f(t)·n_active⌋`` active weights
of smallest ``|w|`` and regrows as many inactive weights of largest dense gradient ``|∂L/∂w|``
(the gradient of the last SGD step's batch), starting them at zero, with the cosine drop
fraction ``f(t) = α/2 · (1 + cos(π t / T_end))``. It differs from SET only in the grow score.
"""

from __future__ import annotations

from typing import ClassVar

from esper.policies.base import POLICIES
from esper.policies.baselines.drop_and_grow import DropAndGrow
from esper.policies.baselines.hooks import dense_gradient, magnitude
from esper.policies.baselines.schedules import CosineDropFraction, UpdateClock

__all__ = ["RigL"]


@POLICIES.register("rigl")
class RigL(DropAndGrow):
    """RigL (Evci et al. 2020): magnitude drop, dense-gradient regrowth, cosine drop fraction.

    Args:
        alpha: Initial drop fraction α (paper: 0.3).
        delta_t: ``ΔT``, SGD steps between updates (paper: 100).
        t_end: ``T_end``, the SGD step after which the mask is frozen (paper: 75% of training;
            set it from the run's length — the default suits runs of about 130k steps).
        regrow_init: Value of regrown weights (paper: ``zero``, so growth leaves the function
            unchanged).
        seed: Seed of the policy's random stream (unused by RigL's scores; kept for symmetry).
    """

    name: ClassVar[str] = "rigl"

    def __init__(
        self,
        alpha: float = 0.3,
        delta_t: int = 100,
        t_end: int = 100_000,
        regrow_init: str = "zero",
        seed: int = 0,
    ) -> None:
        super().__init__(
            CosineDropFraction(alpha, t_end),
            UpdateClock(delta_t, t_end),
            drop=magnitude,
            grow=dense_gradient,
            regrow_init=regrow_init,
            seed=seed,
        )
