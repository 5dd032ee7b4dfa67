"""Temperature annealing schedules for the relaxed masks (Gumbel-softmax, Hard Concrete, DSP).

High temperature gives low-variance, high-bias gradients and exploratory masks; annealing towards
zero hardens the relaxation into a discrete choice (Jang, Gu & Poole 2017, arXiv 1611.01144,
anneal ``τ = max(τ_min, τ₀·exp(−r·t))``). A schedule is a pure function of the step counter,
which the mechanism owns and checkpoints, so schedules carry no state of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from esper.registry import Registry, build

__all__ = [
    "TEMPERATURE_SCHEDULES",
    "ConstantTemperature",
    "CosineTemperature",
    "ExponentialTemperature",
    "LinearTemperature",
    "TemperatureSchedule",
    "make_temperature_schedule",
]


def _positive(what: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{what}={value} must be > 0")


class TemperatureSchedule:
    """Maps the mechanism's step counter ``t`` (calls of ``after_step``) to a temperature."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError


TEMPERATURE_SCHEDULES: Registry[type[TemperatureSchedule]] = Registry("temperature schedule")


@TEMPERATURE_SCHEDULES.register("constant")
class ConstantTemperature(TemperatureSchedule):
    """``τ(t) = tau``.

    Args:
        tau: The temperature, ``> 0``.
    """

    def __init__(self, tau: float = 1.0) -> None:
        _positive("tau", tau)
        self.tau = tau

    def __call__(self, step: int) -> float:
        return self.tau


@TEMPERATURE_SCHEDULES.register("exponential")
class ExponentialTemperature(TemperatureSchedule):
    """``τ(t) = max(tau_min, tau0 · exp(−rate · t))`` (Jang et al. 2017, section 4).

    Args:
        tau0: Starting temperature.
        rate: Decay per step, ``≥ 0``.
        tau_min: Floor.
    """

    def __init__(self, tau0: float = 1.0, rate: float = 1e-3, tau_min: float = 0.1) -> None:
        _positive("tau0", tau0)
        _positive("tau_min", tau_min)
        if rate < 0:
            raise ValueError(f"rate={rate} must be ≥ 0")
        self.tau0, self.rate, self.tau_min = tau0, rate, tau_min

    def __call__(self, step: int) -> float:
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * step))


@TEMPERATURE_SCHEDULES.register("linear")
class LinearTemperature(TemperatureSchedule):
    """Straight line from ``tau0`` to ``tau1`` over ``steps`` steps, then ``tau1``.

    Args:
        tau0: Starting temperature.
        tau1: Final temperature.
        steps: Length of the ramp, ``> 0``.
    """

    def __init__(self, tau0: float = 1.0, tau1: float = 0.1, steps: int = 1000) -> None:
        _positive("tau0", tau0)
        _positive("tau1", tau1)
        _positive("steps", steps)
        self.tau0, self.tau1, self.steps = tau0, tau1, steps

    def __call__(self, step: int) -> float:
        frac = min(step / self.steps, 1.0)
        return self.tau0 + (self.tau1 - self.tau0) * frac


@TEMPERATURE_SCHEDULES.register("cosine")
class CosineTemperature(TemperatureSchedule):
    """Half cosine from ``tau0`` to ``tau1``: ``τ₁ + (τ₀ − τ₁)(1 + cos(π·min(t/T, 1)))/2``.

    The shape of SGDR's learning-rate annealing (Loshchilov & Hutter 2017, arXiv 1608.03983).

    Args:
        tau0: Starting temperature.
        tau1: Final temperature.
        steps: Length of the anneal ``T``, ``> 0``.
    """

    def __init__(self, tau0: float = 1.0, tau1: float = 0.1, steps: int = 1000) -> None:
        _positive("tau0", tau0)
        _positive("tau1", tau1)
        _positive("steps", steps)
        self.tau0, self.tau1, self.steps = tau0, tau1, steps

    def __call__(self, step: int) -> float:
        frac = min(step / self.steps, 1.0)
        return self.tau1 + (self.tau0 - self.tau1) * 0.5 * (1.0 + math.cos(math.pi * frac))


def make_temperature_schedule(
    name: str, params: Mapping[str, Any] | None = None
) -> TemperatureSchedule:
    """Build the registered schedule ``name`` from ``params``, rejecting unknown parameters.

    Raises:
        esper.registry.UnknownNameError: ``name`` is not registered.
        esper.registry.InvalidParameterError: a parameter the schedule does not accept.
    """
    return build(TEMPERATURE_SCHEDULES[name], params or {}, f"temperature schedule {name!r}")
