"""Per-layer (or per-unit-group) temperatures, with an optional annealing schedule.

Each key has a temperature. Keys follow the schedule (a function of the mechanism's step) unless
pinned by :meth:`Temperatures.set`, which is how a policy controls the "focus" of one layer at
run time (the Specialists' Gumbel temperature action). A key may also be *heated*
(:meth:`Temperatures.heat`): its temperature is the schedule's times a factor until the factor
returns to 1, so a surgeon can raise a layer's temperature for a burst without overwriting the
configured (possibly searched) one — the "heat, degrade, regrow, cool" of Lazarus tunnelling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from esper.workloads.scalpel.mechanisms.base import MaskChange, Mechanism
from esper.workloads.scalpel.temperature import (
    ConstantTemperature,
    TemperatureSchedule,
    make_temperature_schedule,
)

__all__ = ["Temperatures", "TemperedMechanism"]


class Temperatures:
    """Temperatures of a set of keys.

    Args:
        tau: Starting temperature when no schedule is given.
        schedule: Name of a registered schedule (``constant``, ``exponential``, ``linear``,
            ``cosine``), or ``None`` for a constant ``tau``.
        schedule_params: Its parameters.
    """

    def __init__(
        self,
        tau: float,
        schedule: str | None = None,
        schedule_params: Mapping[str, Any] | None = None,
    ) -> None:
        if not tau > 0:
            raise ValueError(f"tau={tau} must be > 0")
        if schedule is None:
            if schedule_params:
                raise ValueError("schedule_params given without a schedule name")
            self.schedule: TemperatureSchedule = ConstantTemperature(tau)
        else:
            self.schedule = make_temperature_schedule(schedule, schedule_params)
        self._keys: list[str] = []
        self._pinned: dict[str, float] = {}
        self._factor: dict[str, float] = {}
        self._step = 0

    def add(self, keys: Iterable[str]) -> None:
        """Register the keys that have temperatures."""
        self._keys.extend(keys)

    def _check(self, key: str) -> None:
        if key not in self._keys:
            raise KeyError(f"no temperature for {key!r}; keys with one: {', '.join(self._keys)}")

    def get(self, key: str) -> float:
        """Current temperature of ``key``."""
        self._check(key)
        pinned = self._pinned.get(key)
        if pinned is not None:
            return pinned
        return self.schedule(self._step) * self._factor.get(key, 1.0)

    def heat(self, key: str, factor: float) -> bool:
        """Scale ``key``'s scheduled temperature by ``factor`` (``1``: back to the schedule);
        returns whether its temperature changed. A pinned key keeps its pin (the factor
        applies once the pin is released)."""
        self._check(key)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"temperature factor {factor} for {key!r} must be finite and > 0")
        before = self.get(key)
        if factor == 1.0:
            self._factor.pop(key, None)
        else:
            self._factor[key] = float(factor)
        return self.get(key) != before

    def set(self, key: str, tau: float | None) -> None:
        """Pin ``key`` at ``tau``, or return it to the schedule with ``None``."""
        self._check(key)
        if tau is None:
            self._pinned.pop(key, None)
            return
        if not tau > 0:
            raise ValueError(f"temperature {tau} for {key!r} must be > 0")
        self._pinned[key] = float(tau)

    def advance(self, step: int) -> None:
        """Move the schedule to ``step``."""
        self._step = step

    def state_dict(self) -> dict[str, Any]:
        """Pinned temperatures, heat factors and the schedule's step."""
        return {"pinned": dict(self._pinned), "factor": dict(self._factor), "step": self._step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a state saved before heat factors has none)."""
        self._pinned = dict(state["pinned"])
        self._factor = dict(state.get("factor", {}))
        self._step = int(state["step"])


class TemperedMechanism(Mechanism):
    """A mechanism with per-key temperatures: settable at run time (the Specialists' τ action)
    and advanced along their schedule after every optimizer step."""

    temperatures: Temperatures

    def temperature(self, name: str) -> float:
        return self.temperatures.get(name)

    def set_temperature(self, name: str, tau: float) -> None:
        self.temperatures.set(name, tau)

    def heat_temperature(self, name: str, factor: float) -> bool:
        return self.temperatures.heat(name, factor)

    def after_step(self) -> list[MaskChange]:
        changes = super().after_step()
        self.temperatures.advance(self.step)
        return changes
