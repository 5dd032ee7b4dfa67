"""Checks of :class:`~esper.policies.emrakul.policy.EmrakulPolicy`'s constructor parameters,
each failing with the bad key and value named."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from esper.policies.emrakul.ablation import FIXED_RULES, blind_columns

__all__ = ["check_params"]


def check_params(
    *,
    budget: float | None,
    min_density: float,
    general_bound: float | None,
    general_interval: int,
    use_general: bool,
    amplitude: float,
    elastic: bool,
    elastic_span: float,
    period: int,
    heat_surgeries: int,
    heat_tau: float,
    heat_turnover: float,
    discrete: bool,
    blind: Sequence[str],
    sensor_dropout: float,
    fixed_rule: str,
    protect: bool,
    max_layers: int,
    **_: Any,
) -> None:
    """Raise :class:`ValueError` naming the first inconsistent parameter (the others, such as
    widths and seeds, are accepted as they come)."""
    if budget is not None and not min_density <= budget <= 1.0:
        raise ValueError(f"budget={budget} must lie in [min_density={min_density}, 1]")
    if general_interval < 1 or heat_surgeries < 0 or period < 1 or max_layers < 1:
        raise ValueError(
            f"need general_interval ≥ 1 ({general_interval}), heat_surgeries ≥ 0 "
            f"({heat_surgeries}), period ≥ 1 ({period}), max_layers ≥ 1 ({max_layers})"
        )
    if heat_tau < 1 or heat_turnover < 1:
        raise ValueError(f"heat_tau={heat_tau} and heat_turnover={heat_turnover} must be ≥ 1")
    if amplitude < 0 or (general_bound is not None and general_bound <= 0):
        raise ValueError(f"need amplitude={amplitude} ≥ 0 and general_bound={general_bound} > 0")
    if elastic and (not use_general or amplitude > 0 or elastic_span < 1):
        raise ValueError(
            f"elastic=True needs use_general=True (got {use_general}), amplitude=0 (got "
            f"{amplitude}: both would move the global density) and elastic_span ≥ 1 (got "
            f"{elastic_span})"
        )
    if fixed_rule not in FIXED_RULES:
        raise ValueError(f"fixed_rule={fixed_rule!r} is unknown; valid: {', '.join(FIXED_RULES)}")
    if not 0.0 <= sensor_dropout < 1.0:
        raise ValueError(
            f"sensor_dropout={sensor_dropout} must lie in [0, 1): it is the probability that "
            "an exploring decision loses a sensor group (0: never)"
        )
    if protect and discrete:
        raise ValueError(
            "protect is a bit of the continuous actor; the discrete table (QMIX) has no "
            "protecting action: use a continuous learner"
        )
    blind_columns([], blind)  # an unknown sensor group is refused here
