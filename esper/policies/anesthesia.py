"""Anesthesia: sedation after surgery and harmonic annealing of the density target.

*Sedation* damps a layer's learning rate for a few SGD steps after it is operated on, so the
high-variance gradients right after a structural change do not propagate: a policy asks for it
through :class:`~esper.workloads.actions.LayerAction`'s ``sedation`` and ``sedation_steps``, and
the organism applies it through the optimizer's per-layer groups
(:class:`esper.workloads.anesthesia.Sedation`). *Harmonic annealing* lets the global density
target breathe around the budget, ``d_t = d + g · A · sin(2π t / P)``, so the network
periodically wakes pruned capacity instead of drifting into a coma; the Surgeon General modulates
the gain ``g ∈ [0, 2]``. Over a whole period the mean target equals the budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from esper.workloads.actions import LayerAction

__all__ = ["HarmonicAnnealing", "sedate"]


@dataclass
class HarmonicAnnealing:
    """The oscillating density target ``d + g · A · sin(2π t / P)``, clipped to the bounds.

    Args:
        budget: Mean global density ``d``.
        amplitude: ``A``, in density units (0 disables annealing).
        period: ``P``, in surgeries.
        floor: Lowest target (the General's minimum layer density).
        ceiling: Highest target.
    """

    budget: float
    amplitude: float = 0.0
    period: int = 8
    floor: float = 0.0
    ceiling: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget={self.budget} must lie in (0, 1]")
        if self.amplitude < 0:
            raise ValueError(f"amplitude={self.amplitude} must be ≥ 0")
        if self.period < 1:
            raise ValueError(f"period={self.period} must be ≥ 1 surgery")
        if not 0.0 <= self.floor <= self.budget <= self.ceiling <= 1.0:
            raise ValueError(
                f"need 0 ≤ floor ({self.floor}) ≤ budget ({self.budget}) ≤ ceiling "
                f"({self.ceiling}) ≤ 1"
            )

    def target(self, surgery: int, gain: float = 1.0) -> float:
        """The density target at surgery ``surgery`` with the General's ``gain`` (≥ 0)."""
        if gain < 0:
            raise ValueError(f"gain={gain} must be ≥ 0")
        wave = math.sin(2.0 * math.pi * surgery / self.period)
        return min(self.ceiling, max(self.floor, self.budget + gain * self.amplitude * wave))

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings (it has no other state: targets depend on ``t`` only)."""
        return {
            "budget": self.budget,
            "amplitude": self.amplitude,
            "period": self.period,
            "floor": self.floor,
            "ceiling": self.ceiling,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        restored = HarmonicAnnealing(**dict(state))
        self.__dict__.update(restored.__dict__)


def sedate(action: LayerAction, multiplier: float, steps: int) -> LayerAction:
    """``action`` with its layer's learning rate multiplied by ``multiplier`` for ``steps``.

    Raises:
        esper.workloads.actions.InvalidActionError: ``multiplier`` outside ``(0, 1]`` or
            negative ``steps`` (nothing is changed).
    """
    candidate = replace(
        action, sedation=multiplier, sedation_steps=steps if multiplier < 1.0 else 0
    )
    action.sedation, action.sedation_steps = candidate.sedation, candidate.sedation_steps
    return action
