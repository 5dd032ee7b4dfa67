"""Drift schedules: when the stream moves from one distribution to the next.

The stream is cut into tasks of ``task_length`` steps. A schedule says which distribution task
``k`` shows (``distribution_of(k)``) and how the hand-over happens: at once (abrupt), blended
over a window of steps (gradual: each example comes from the incoming distribution with a
probability that ramps linearly from 0 to 1 across the window), or cycling through a pattern of
distributions that come back (recurring, A→B→A).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esper.registry import Registry, build

__all__ = ["SCHEDULES", "Abrupt", "Gradual", "Phase", "Recurring", "Schedule", "make_schedule"]


@dataclass(frozen=True)
class Phase:
    """Where the stream stands at one step.

    Attributes:
        task_index: The nominal task, ``step // task_length``.
        current: Distribution the examples come from (with probability ``1 - weight``).
        incoming: Distribution blended in during a gradual hand-over (equals ``current`` otherwise).
        weight: Probability that an example comes from ``incoming``.
    """

    task_index: int
    current: int
    incoming: int
    weight: float


class Schedule:
    """Tasks of ``task_length`` steps with distributions ``distribution_of(k)``, blended over
    ``window`` steps around each boundary.

    Args:
        task_length: Steps per task.
        window: Width in steps of the blend centred on each task boundary (0: abrupt).
    """

    name = "schedule"

    def __init__(self, task_length: int, window: int = 0) -> None:
        if task_length < 1:
            raise ValueError(f"task_length must be ≥ 1, got {task_length}")
        if not 0 <= window <= task_length:
            raise ValueError(f"window must be in 0..task_length={task_length}, got {window}")
        self.task_length = task_length
        self.window = window

    def distribution_of(self, task: int) -> int:
        """The distribution shown by task ``task``."""
        return task

    def phase(self, step: int) -> Phase:
        """The blend of distributions at stream step ``step``."""
        k, offset = divmod(step, self.task_length)
        current = self.distribution_of(k)
        half = self.window / 2
        if self.window and offset >= self.task_length - half:
            # Approaching the next boundary: blend the next task in.
            position = offset - (self.task_length - half) + 0.5
            return Phase(k, current, self.distribution_of(k + 1), position / self.window)
        if self.window and k > 0 and offset < half:
            # Just past a boundary: the previous task is still fading out.
            position = offset + half + 0.5
            return Phase(k, self.distribution_of(k - 1), current, position / self.window)
        return Phase(k, current, current, 0.0)

    def boundaries(self, num_tasks: int) -> list[int]:
        """Steps at which tasks 1..num_tasks-1 begin."""
        return [k * self.task_length for k in range(1, num_tasks)]


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


@SCHEDULES.register("abrupt")
class Abrupt(Schedule):
    """Each task is a new distribution; hand-over in one step.

    Args:
        task_length: Steps per task.
    """

    name = "abrupt"

    def __init__(self, task_length: int = 300) -> None:
        super().__init__(task_length, 0)


@SCHEDULES.register("gradual")
class Gradual(Schedule):
    """Each task is a new distribution, blended in linearly over ``window`` steps.

    Args:
        task_length: Steps per task.
        window: Blend width in steps, centred on the boundary.
    """

    name = "gradual"

    def __init__(self, task_length: int = 300, window: int = 100) -> None:
        super().__init__(task_length, window)


@SCHEDULES.register("recurring")
class Recurring(Schedule):
    """Distributions that come back: task ``k`` shows ``pattern[k mod len(pattern)]``.

    Args:
        task_length: Steps per task.
        pattern: The cycle of distributions; ``[0, 1]`` gives A→B→A→B…
        window: Optional blend width at each boundary.
    """

    name = "recurring"

    def __init__(
        self, task_length: int = 300, pattern: tuple[int, ...] = (0, 1), window: int = 0
    ) -> None:
        super().__init__(task_length, window)
        if len(pattern) < 2 or any(int(p) < 0 for p in pattern):
            raise ValueError(
                f"recurring pattern needs ≥ 2 non-negative distributions, got {list(pattern)}"
            )
        self.pattern = tuple(int(p) for p in pattern)

    def distribution_of(self, task: int) -> int:
        return self.pattern[task % len(self.pattern)]


def make_schedule(name: str, **params: Any) -> Schedule:
    """Build a registered schedule, rejecting unknown parameters by name."""
    return build(SCHEDULES[name], params, f"schedule {name!r}")
