"""A drift detector on the organism's own loss, for scripted rules that react to novelty.

:class:`LossDrift` marks a drift when one surgery interval's online loss exceeds ``1 +
threshold`` times its exponential moving average: Page's (1954) change detection in its
simplest form, and no ground truth about the stream. ``rigl_elastic`` raises its density at
each detection (:mod:`esper.policies.baselines.elastic_rigl`); ``benchmarks/headroom.py`` starts
a heat burst.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["LossDrift"]


class LossDrift:
    """Loss-jump drift detection against an exponential moving average.

    Args:
        threshold: A drift is a loss above ``1 + threshold`` times the average (> 0).
        smoothing: The average's weight on its past, in ``[0, 1)``.
    """

    def __init__(self, threshold: float = 0.3, smoothing: float = 0.8) -> None:
        if threshold <= 0 or not 0.0 <= smoothing < 1.0:
            raise ValueError(
                f"need threshold > 0 (got {threshold}) and smoothing in [0, 1) (got {smoothing})"
            )
        self.threshold = threshold
        self.smoothing = smoothing
        self.average: float | None = None

    def update(self, loss: float) -> bool:
        """Feed one interval's online loss; whether it marks a drift (a non-finite loss is
        skipped and marks none)."""
        if not math.isfinite(loss):
            return False
        drift = self.average is not None and loss > (1.0 + self.threshold) * self.average
        past = loss if self.average is None else self.average
        self.average = self.smoothing * past + (1.0 - self.smoothing) * loss
        return drift

    def reset(self) -> None:
        """Forget the average (a new run)."""
        self.average = None

    def state_dict(self) -> dict[str, Any]:
        """The moving average (``None`` before the first loss)."""
        return {"average": self.average}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.average = None if state["average"] is None else float(state["average"])
