"""PBT's fitness: how a member ranks, not which phase its stream is in.

One iteration's raw online accuracy follows the stream's phase: right after a drift every member
of a sweep drops together (0.91 for all in one iteration, 0.35-0.43 in the next), so a search
ranking on it copies noise. Each episode is instead compared with its organism's reference twin
on the same batches (:mod:`esper.policies.reference`): ``relative_accuracy`` is the organism's
online accuracy minus the twin's over the same SGD steps. A member's fitness at an iteration is
the mean relative accuracy of the iteration's episodes, averaged over its last
``search.fitness_window`` iterations (iterations whose episodes have none, every twin
diverged, leave the history as it was).

The history belongs to the member's state (:meth:`Fitness.state_dict`): a PBT exploit copies it
with the rest, and a restored member continues it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["Fitness"]


class Fitness:
    """The smoothed relative accuracy of one member.

    Args:
        window: Iterations averaged (``search.fitness_window``, ≥ 1).
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"search.fitness_window must be ≥ 1, got {window}")
        self.window = window
        self.history: deque[float] = deque(maxlen=window)

    def update(self, relative: float) -> float:
        """Add an iteration's mean relative accuracy (a non-finite one is skipped) and return
        the fitness."""
        if math.isfinite(relative):
            self.history.append(float(relative))
        return self.value

    @property
    def value(self) -> float:
        """The mean of the last ``window`` iterations' relative accuracies (``nan`` before
        the first)."""
        return sum(self.history) / len(self.history) if self.history else float("nan")

    def state_dict(self) -> dict[str, Any]:
        """The window and the iterations it holds (plain data)."""
        return {"window": self.window, "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue :meth:`state_dict` output (its latest ``window`` iterations, if it was
        kept over a longer window)."""
        self.history = deque((float(v) for v in state["history"]), maxlen=self.window)
