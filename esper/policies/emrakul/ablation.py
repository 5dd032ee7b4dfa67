"""Switches that take a part of Emrakul away, for ablations.

* **Blind sensor groups** (:data:`SENSOR_GROUPS`): the named observation and global-state
  features are zeroed before the actors see them, so a trained policy can be evaluated without
  a group (which sensors does it rely on?) or trained without it.
* **Specialists replaced by RigL's rule** (:data:`RIGL_RULE`): every layer drops its
  lowest-magnitude active weights and regrows the highest dense-gradient inactive ones (Evci et
  al. 2020), at a constant turnover of 0.15 (the mean of RigL's cosine drop fraction with
  ``α = 0.3`` over its update period), while the Surgeon General still allocates densities.
* **Specialists replaced by random surgery** (:data:`RANDOM_RULE`): the same turnover, but the
  weights dropped and regrown are drawn uniformly at random (the handicap a fitness must rank
  last, ``benchmarks/fitness_ranking.py``).

Whether a trained policy *uses* a sensor group is measured by
:func:`~esper.policies.emrakul.sensitivity.sensor_sensitivity`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from esper.policies.emrakul.actions import PRUNE_CRITERIA, REGROW_CRITERIA, SpecialistAction

__all__ = [
    "FIXED_RULES",
    "RANDOM_RULE",
    "RANDOM_TAU",
    "RIGL_RULE",
    "SENSOR_GROUPS",
    "blind_columns",
]

SENSOR_GROUPS: dict[str, tuple[str, ...]] = {
    "gradient": (
        "log_fisher_trace",
        "log_fisher_mean",
        "log_gsnr",
        "coherence",
        "log_contact_ratio",
        "fisher_trend",
        "gsnr_trend",
        "fgsf",
    ),
    "curvature": ("slog_hessian_trace",),
    "mask_history": ("flip_rate", "regrow_reprune_share"),
    "activity": ("dormant_fraction", "rank_ratio"),
    "topology": (
        "log_fan_in",
        "log_fan_out",
        "log_numel",
        "depth",
        "path_share",
        "predicted_impact",
        "topo_",
    ),
}
"""Feature names of each sensor group (a name ending in ``_`` is a prefix). A global-state
feature ``Lxx.<name>`` belongs to the group of ``<name>``; ``topo_mean_i`` to topology."""

RIGL_RULE = SpecialistAction(
    turnover=0.15,
    prune_mix=tuple(1.0 if c == "magnitude" else 0.0 for c in PRUNE_CRITERIA),
    regrow_mix=tuple(1.0 if c == "gradient" else 0.0 for c in REGROW_CRITERIA),
    tau=0.0,
)
"""What every Specialist does when the policy runs without Specialists (``fixed_rule="rigl"``)."""

RANDOM_TAU = 1e6
"""A Gumbel-top-k temperature at which the choice is a uniform random subset: the mixed scores
are ranks in ``[0, 1]``, so ``score / τ`` vanishes beside the Gumbel noise."""

RANDOM_RULE = SpecialistAction(
    turnover=RIGL_RULE.turnover,
    prune_mix=RIGL_RULE.prune_mix,
    regrow_mix=tuple(1.0 if c == "random" else 0.0 for c in REGROW_CRITERIA),
    tau=RANDOM_TAU,
)
"""RIGL_RULE's turnover with random drop and random regrowth (``fixed_rule="random"``)."""

FIXED_RULES: dict[str, SpecialistAction] = {"rigl": RIGL_RULE, "random": RANDOM_RULE}
"""The rules that can replace the Specialists, by name."""


def _in_group(name: str, features: tuple[str, ...]) -> bool:
    base = name.split(".", 1)[1] if "." in name else name
    return any(base.startswith(f) if f.endswith("_") else base == f for f in features)


def blind_columns(names: Sequence[str], groups: Sequence[str]) -> torch.Tensor:
    """Boolean mask over ``names``: the features of the sensor ``groups``.

    Raises:
        KeyError: an unknown group (the message lists the valid ones).
    """
    unknown = [g for g in groups if g not in SENSOR_GROUPS]
    if unknown:
        raise KeyError(f"unknown sensor groups {unknown}; valid: {', '.join(SENSOR_GROUPS)}")
    features = tuple(f for g in groups for f in SENSOR_GROUPS[g])
    return torch.tensor([_in_group(n, features) for n in names], dtype=torch.bool)
