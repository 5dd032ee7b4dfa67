"""The keys a population search may vary, each with the range its consumer accepts.

A search bound is refused at composition unless its key is listed here and both ends lie in
the key's valid range (an explore step of PBT multiplies a value by 1.2 or 0.8, and PB2
proposes anywhere in the bound, so a bound that leaves the valid range would hand a member a
value its learner or policy refuses mid-sweep). Explored values are clipped to their bound
(:func:`clip_to_bound`), so they never leave it.

Only continuous keys are searchable: PBT's perturbation produces floats. Which keys apply
depends on the composed config: a learner's keys need that learner (``lr`` for every learner,
``epsilon_end`` for QMIX), a mask temperature needs a mechanism that takes one.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass

from esper.conf.checks import ConfigError
from esper.config import EsperConfig

__all__ = ["SEARCHABLE", "ValidRange", "check_bounds", "clip_to_bound", "searchable_keys"]


@dataclass(frozen=True)
class ValidRange:
    """The values a key's consumer accepts: ``low ≤ v ≤ high``, an end excluded when open."""

    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    meaning: str = ""
    """What the key is (listed by ``esper config searchable`` and the README)."""

    def contains(self, value: float) -> bool:
        """Whether ``value`` is valid."""
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        high = "∞" if math.isinf(self.high) else f"{self.high:g}"
        return f"{left}{self.low:g}, {high}{right}"


SEARCHABLE: dict[str, ValidRange] = {
    "reward.alpha": ValidRange(meaning="α, weight of online accuracy"),
    "reward.beta": ValidRange(meaning="β, weight of FLOPs"),
    "reward.gamma": ValidRange(meaning="γ, weight of mask oscillation"),
    "reward.delta": ValidRange(meaning="δ, weight of gradient SNR"),
    "reward.epsilon": ValidRange(meaning="ε, weight of the post-surgery loss spike"),
    "policy.params.heat_tau": ValidRange(low=1.0, meaning="Emrakul's heat: factor on τ"),
    "policy.params.heat_turnover": ValidRange(low=1.0, meaning="heat: factor on turnover"),
    "policy.params.amplitude": ValidRange(high=1.0, meaning="annealing amplitude"),
    "policy.params.max_turnover": ValidRange(low_open=True, high=1.0,
                                             meaning="largest turnover a Specialist may ask"),
    "workload.l2_init": ValidRange(low_open=True,  # λ = 0 has no anchors for PBT to copy
                                   meaning="L2 Init's λ, pull toward the initial weights"),
    "workload.scalpel.mechanism.params.tau": ValidRange(low_open=True,
                                                        meaning="mask temperature τ"),
    "workload.scalpel.mechanism.params.beta": ValidRange(low_open=True,
                                                         meaning="Hard Concrete's temperature β"),
    "workload.scalpel.mechanism.params.schedule_params.tau0": ValidRange(
        low_open=True, meaning="mask temperature schedule's base τ₀"),
    "policy.training.learner_params.lr": ValidRange(low_open=True,
                                                    meaning="Specialists' learning rate"),
    "policy.training.learner_params.critic_lr": ValidRange(low_open=True,
                                                           meaning="MAPPO critic's rate"),
    "policy.training.learner_params.entropy_coef": ValidRange(meaning="MAPPO entropy bonus"),
    "policy.training.learner_params.aux_coef": ValidRange(
        meaning="weight of MAPPO's auxiliary effect prediction"
    ),
    "policy.training.learner_params.aux_lr": ValidRange(
        low_open=True, meaning="learning rate of the auxiliary effect head"
    ),
    "policy.training.learner_params.clip": ValidRange(low_open=True, meaning="PPO clip ε"),
    "policy.training.learner_params.gamma": ValidRange(high=1.0, meaning="discount γ"),
    "policy.training.learner_params.lam": ValidRange(high=1.0, meaning="GAE λ"),
    "policy.training.learner_params.epsilon_start": ValidRange(high=1.0,
                                                               meaning="QMIX ε at start"),
    "policy.training.learner_params.epsilon_end": ValidRange(high=1.0, meaning="QMIX ε floor"),
    "policy.training.general_params.lr": ValidRange(low_open=True,
                                                    meaning="Surgeon General's learning rate"),
    "policy.training.general_params.entropy_coef": ValidRange(meaning="General's entropy bonus"),
}  # fmt: skip
"""Every searchable key and its valid range."""


def _accepts(factory: object, name: str) -> bool:
    parameters = inspect.signature(factory).parameters  # type: ignore[arg-type]
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _applies(cfg: EsperConfig, key: str) -> str | None:
    """Why ``key`` does not apply to ``cfg`` (``None`` when it does)."""
    name = key.rsplit(".", 1)[-1]
    if key.startswith("policy.training.learner_params."):
        from esper.policies.learners import LEARNERS

        learner = cfg.policy.training.learner
        if learner in LEARNERS and not _accepts(LEARNERS[learner].params_class, name):
            return f"learner {learner!r} has no parameter {name!r}"
    if key.startswith("policy.training.general_params."):
        from esper.policies.learners import MAPPOLearner

        if not _accepts(MAPPOLearner, name):
            return f"the General's MAPPO has no parameter {name!r}"
    if key.startswith("workload.scalpel.mechanism.params.schedule_params."):
        if not cfg.workload.scalpel.mechanism.params.get("schedule"):
            return "the mechanism has no temperature schedule (set ...mechanism.params.schedule)"
    elif key.startswith("workload.scalpel.mechanism.params."):
        from esper.workloads.scalpel.mechanisms import MECHANISMS

        mechanism = cfg.workload.scalpel.mechanism.name
        if mechanism in MECHANISMS and not _accepts(MECHANISMS[mechanism], name):
            return (
                f"mechanism {mechanism!r} takes no {name!r} (temperatures: gumbel_softmax, "
                "hard_concrete, gumbel_topk, atm)"
            )
    if key.startswith("policy.params.") and cfg.policy.name != "emrakul":
        return f"policy {cfg.policy.name!r} is not trained by a sweep (policy=emrakul)"
    return None


def check_bounds(cfg: EsperConfig) -> None:
    """Refuse a bound on a key that is not searchable, that does not apply to ``cfg``, that is
    not ``[low, high]`` with ``low < high``, or whose ends leave the key's valid range.

    Raises:
        ConfigError: naming the key, the bound and the valid range.
    """
    for key, bound in cfg.search.bounds.items():
        if key not in SEARCHABLE:
            raise ConfigError(
                f"search.bounds.{key} is not searchable; searchable keys: {', '.join(SEARCHABLE)}"
            )
        if len(bound) != 2 or not float(bound[0]) < float(bound[1]):
            raise ConfigError(
                f"search.bounds.{key} must be [low, high] with low < high, got {bound}"
            )
        valid = SEARCHABLE[key]
        outside = [v for v in bound if not valid.contains(float(v))]
        if outside:
            raise ConfigError(
                f"search.bounds.{key}={list(bound)} leaves the key's valid range {valid} "
                f"({outside[0]:g} is outside); choose a bound inside it"
            )
        why = _applies(cfg, key)
        if why is not None:
            raise ConfigError(f"search.bounds.{key} does not apply: {why}")


def clip_to_bound(values: Mapping[str, object], bounds: Mapping[str, list[float]]) -> dict:
    """``values`` with each searched key clipped into its bound (which lies inside the key's
    valid range), so that an explore step can never hand a member an invalid value."""
    out = dict(values)
    for key, (low, high) in bounds.items():
        value = out.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = min(max(float(value), float(low)), float(high))
    return out


def searchable_keys() -> list[tuple[str, str, str]]:
    """``(key, valid range, meaning)`` for every searchable key (for help and docs)."""
    return [(key, str(valid), valid.meaning) for key, valid in SEARCHABLE.items()]
