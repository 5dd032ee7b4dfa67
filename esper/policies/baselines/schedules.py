"""When and how much the heuristic baselines cut: update clocks and drop-fraction schedules.

Every time is in SGD steps (``organism.sgd_step``), as in the papers, not in surgeries. A policy
acts only at surgery steps (every ``K`` SGD steps), so an update due at SGD step ``t`` happens
at the first surgery at or after ``t`` (:class:`UpdateClock`); with ``K`` dividing the period the
two coincide.

- :class:`ConstantDropFraction`: SET's constant ζ (Mocanu et al. 2018).
- :class:`CosineDropFraction`: RigL's ``f(t) = α/2 · (1 + cos(π t / T_end))`` (Evci et al. 2020,
  arXiv 1911.11134, eq. 1), as ``rigl_torch.RigLScheduler.cosine_annealing``.
- :class:`CubicSparsity`: GMP's ``s_t = s_f + (s_0 − s_f)(1 − (t − t_0)/(nΔt))³`` (Zhu & Gupta
  2017, arXiv 1710.01878, eq. 1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConstantDropFraction",
    "CosineDropFraction",
    "CubicSparsity",
    "DropFraction",
    "UpdateClock",
    "check_cubic_timing",
]


class DropFraction(ABC):
    """Fraction of a layer's active weights swapped at a drop-and-grow update at SGD step t."""

    @abstractmethod
    def __call__(self, t: int) -> float:
        """The drop fraction at SGD step ``t``."""


class ConstantDropFraction(DropFraction):
    """SET's constant drop fraction ζ (Mocanu et al. 2018).

    Args:
        fraction: ζ, in ``[0, 1]``.
    """

    def __init__(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"drop fraction={fraction} must lie in [0, 1] (SET uses 0.3)")
        self.fraction = fraction

    def __call__(self, t: int) -> float:
        return self.fraction


class CosineDropFraction(DropFraction):
    """RigL's cosine decay ``f(t) = α/2 · (1 + cos(π t / T_end))`` (Evci et al. 2020, eq. 1).

    ``f(0) = α``, ``f(T_end/2) = α/2``, ``f(T_end) = 0``; after ``T_end`` it stays 0.

    Args:
        alpha: α, the initial drop fraction, in ``(0, 1]`` (RigL: 0.3).
        t_end: ``T_end`` in SGD steps, ≥ 1 (RigL: 75% of training).
    """

    def __init__(self, alpha: float, t_end: int) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must lie in (0, 1] (RigL uses 0.3)")
        if t_end < 1:
            raise ValueError(f"t_end={t_end} must be ≥ 1 SGD step (RigL: 75% of training)")
        self.alpha = alpha
        self.t_end = t_end

    def __call__(self, t: int) -> float:
        if t >= self.t_end:
            return 0.0
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * t / self.t_end))


def check_cubic_timing(begin: int, frequency: int, steps: int) -> None:
    """Validate the cubic schedule's ``t_0``, ``Δt`` and ``n``.

    Raises:
        ValueError: naming the values and what they must be.
    """
    if begin < 0 or frequency < 1 or steps < 1:
        raise ValueError(
            f"need begin ≥ 0, frequency ≥ 1 and steps ≥ 1 (got {begin}, {frequency}, {steps})"
        )


class CubicSparsity:
    """GMP's sparsity schedule (Zhu & Gupta 2017, eq. 1).

    ``s_t = s_f + (s_0 − s_f)(1 − (t − t_0)/(nΔt))³`` for ``t_0 ≤ t ≤ t_0 + nΔt``, with ``t``
    rounded down to the last pruning step ``t_0 + jΔt``; ``s_0`` before ``t_0`` and ``s_f`` after.

    Args:
        initial: ``s_0``, in ``[0, 1)``.
        final: ``s_f``, in ``[s_0, 1)``.
        begin: ``t_0`` in SGD steps.
        frequency: ``Δt`` in SGD steps, ≥ 1.
        steps: ``n``, the number of pruning steps, ≥ 1.
    """

    def __init__(
        self, initial: float, final: float, begin: int, frequency: int, steps: int
    ) -> None:
        if not 0.0 <= initial < 1.0:
            raise ValueError(f"initial sparsity={initial} must lie in [0, 1)")
        if not initial <= final < 1.0:
            raise ValueError(
                f"final sparsity={final} must lie in [initial sparsity {initial}, 1): GMP only "
                f"prunes; lower the final density below the initial one"
            )
        check_cubic_timing(begin, frequency, steps)
        self.initial = initial
        self.final = final
        self.begin = begin
        self.frequency = frequency
        self.steps = steps

    @property
    def end(self) -> int:
        """``t_0 + nΔt``: the SGD step at which the final sparsity is reached."""
        return self.begin + self.steps * self.frequency

    def __call__(self, t: int) -> float:
        """Target sparsity at SGD step ``t``."""
        if t <= self.begin:
            return self.initial
        if t >= self.end:
            return self.final
        t = self.begin + (t - self.begin) // self.frequency * self.frequency
        progress = (t - self.begin) / (self.steps * self.frequency)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


class UpdateClock:
    """Updates every ``period`` SGD steps while ``t < end``, at the surgery timescale.

    An update is due at the first surgery at or after each multiple of ``period`` (``t > 0``),
    as ``rigl_torch`` updates when ``step % ΔT == 0 and step < T_end``.

    Args:
        period: ``ΔT`` in SGD steps, ≥ 1.
        end: No update at or after this SGD step (``None``: never stops).
    """

    def __init__(self, period: int, end: int | None = None) -> None:
        if period < 1:
            raise ValueError(f"update period={period} must be ≥ 1 SGD step")
        if end is not None and end < 1:
            raise ValueError(f"end={end} must be ≥ 1 SGD step, or None to never stop")
        self.period = period
        self.end = end
        self.last = 0

    def reset(self) -> None:
        """Forget past updates: the next multiple of ``period`` after step 0 is due."""
        self.last = 0

    def due(self, t: int) -> bool:
        """Whether an update is due at SGD step ``t``; if so, records it."""
        if self.end is not None and t >= self.end:
            return False
        if t // self.period > self.last // self.period:
            self.last = t
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """The SGD step of the last update."""
        return {"last": self.last}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.last = int(state["last"])
