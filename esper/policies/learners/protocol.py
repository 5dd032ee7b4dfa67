"""One protocol for every learner of Emrakul's Specialists, and their registry.

The trainer (:mod:`esper.policies.training`) hands each surgery's experience to the learner as
a :class:`Transition` and asks for an update at the end of every episode; it never asks which
learner it has. A learner is bound to the policy it trains when it is built: MAPPO trains the
policy's continuous Specialist actor in place, QMIX installs its Q network as the policy's
discrete head. Acting stays with the policy (decentralized execution: an evaluated policy has no
learner). A new learner is one class registered in :data:`LEARNERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from esper.registry import Registry, build

if TYPE_CHECKING:
    from esper.policies.emrakul.policy import EmrakulPolicy

__all__ = ["LEARNERS", "SpecialistLearner", "Transition", "make_learner"]


@dataclass(frozen=True)
class Transition:
    """One surgery as the Specialists' learner sees it.

    Attributes:
        obs: ``[n, obs_dim]`` local observations the Specialists acted on.
        ids: ``[n]`` agent (layer slot) indices.
        state: ``[state_dim]`` global state at the decision.
        action: Raw actions: ``[n, width]`` continuous, or ``[n]`` discrete indices.
        log_prob: ``[n]`` log-probabilities of ``action`` under the acting policy.
        reward: The team reward of the surgery.
        next_obs: ``[n, obs_dim]`` observations after the surgery's ``K`` steps.
        next_state: ``[state_dim]`` global state after them.
        done: The organism diverged (no bootstrap).
    """

    obs: torch.Tensor
    ids: torch.Tensor
    state: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    reward: float
    next_obs: torch.Tensor
    next_state: torch.Tensor
    done: bool


class SpecialistLearner(ABC):
    """Centralized training of the Specialists of one :class:`EmrakulPolicy`.

    Lifecycle: built bound to a policy whose networks exist; :meth:`store` after every surgery;
    :meth:`update` at the end of every episode; :meth:`state_dict`/:meth:`load_state_dict` for
    checkpoints (tensors and plain data only). :attr:`params` are the constructor's keyword
    arguments, saved with the checkpoint so the learner can be rebuilt.
    """

    name: ClassVar[str]
    trains_actor: ClassVar[bool] = False
    """Whether this learner trains the policy's continuous Specialist actor (so behaviour
    cloning of that actor is a meaningful warm start)."""

    params: dict[str, Any]

    @abstractmethod
    def store(self, transition: Transition) -> None:
        """Keep one surgery's experience."""

    @abstractmethod
    def update(self, bootstrap: torch.Tensor | None) -> dict[str, float]:
        """Learn from what was stored since the last update; the episode ended in global state
        ``bootstrap`` (``None``: it ended for good, as after divergence). Returns losses."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The learner's whole state (networks it owns, optimizers, buffers, generators)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a learner built with the same params."""


LEARNERS: Registry[type[SpecialistLearner]] = Registry("learner")
"""Specialist learners by name (``mappo``, ``qmix``)."""


def make_learner(
    name: str, policy: EmrakulPolicy, params: Mapping[str, Any] | None = None
) -> SpecialistLearner:
    """Build learner ``name`` bound to ``policy``; unknown names and parameters are refused
    with the valid ones listed."""
    return build(LEARNERS[name], dict(params or {}), f"learner {name!r}", fixed={"policy": policy})
