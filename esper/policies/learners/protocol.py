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

    Lifecycle: built bound to a policy whose networks exist; :meth:`store` every surgery of an
    episode, :meth:`finish_path` at its end (several episodes, from several organisms, may be
    stored before one :meth:`update`); :meth:`state_dict`/:meth:`load_state_dict` for
    checkpoints (tensors and plain data only). :attr:`params` are the constructor's keyword
    arguments, saved with the checkpoint so the learner can be rebuilt.

    Replicas act with a copy of the policy: :meth:`acting_state` is what such a copy needs
    beyond the policy's own networks (QMIX: its Q network and ε), and :meth:`attach` installs
    it into a copy.
    """

    name: ClassVar[str]
    trains_actor: ClassVar[bool] = False
    """Whether this learner trains the policy's continuous Specialist actor (so behaviour
    cloning of that actor is a meaningful warm start)."""

    params: dict[str, Any]
    params_class: ClassVar[type]
    """The class whose keyword arguments :attr:`params` are (what ``learner_params`` and a
    search over ``policy.training.learner_params.*`` may set)."""

    @abstractmethod
    def store(self, transition: Transition) -> None:
        """Keep one surgery's experience."""

    def finish_path(self, bootstrap: torch.Tensor | None) -> None:
        """Close the episode stored since the last call; it ended in global state ``bootstrap``
        (``None``: it ended for good, as after divergence). Default: nothing to close."""
        return None

    @abstractmethod
    def update(self) -> dict[str, float]:
        """Learn from the finished episodes stored since the last update; returns losses."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The learner's whole state (networks it owns, optimizers, buffers, generators)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a learner built with the same params."""

    def acting_state(self) -> dict[str, Any]:
        """What a replica's copy of the policy needs to act like this learner's policy, beyond
        the policy's networks (default: nothing)."""
        return {}

    @classmethod
    def attach(cls, policy: EmrakulPolicy, state: Mapping[str, Any], seed: int) -> None:
        """Install :meth:`acting_state` output into a replica's ``policy`` (default: nothing);
        ``seed`` seeds the copy's own exploration stream."""
        return None


LEARNERS: Registry[type[SpecialistLearner]] = Registry("learner")
"""Specialist learners by name (``mappo``, ``qmix``)."""


def make_learner(
    name: str, policy: EmrakulPolicy, params: Mapping[str, Any] | None = None
) -> SpecialistLearner:
    """Build learner ``name`` bound to ``policy``; unknown names and parameters are refused
    with the valid ones listed."""
    return build(LEARNERS[name], dict(params or {}), f"learner {name!r}", fixed={"policy": policy})
