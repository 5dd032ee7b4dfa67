"""The central learner: Emrakul's networks and their learners, fed with episodes.

Centralized training, decentralized execution: replicas act with copies of the policy
(:func:`esper.policies.rollout.rollout`) and send back :class:`~esper.policies.rollout.Episode`s;
:class:`CentralLearner` learns from episodes of many organisms at once (the Specialists through
the learner protocol, the Surgeon General through MAPPO) and publishes the weights replicas act
with (:meth:`CentralLearner.acting_state`, loaded by :func:`load_acting_state`). The in-process
trainer (:mod:`esper.policies.training`) and the Ray learner actor (:mod:`esper.platform`) are
both thin loops around it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from esper.config import TrainingConfig
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.learners import LEARNERS, MAPPOLearner, SpecialistLearner, make_learner
from esper.policies.rollout import Episode
from esper.seeding import derive_seed, small_seed

__all__ = ["CentralLearner", "load_acting_state"]

_GENERAL_ID = torch.zeros(1, dtype=torch.long)
"""The Surgeon General is the critic's only agent of its own MAPPO."""


class CentralLearner:
    """The Specialists' learner and the Surgeon General's MAPPO around one policy.

    Args:
        policy: The policy being trained; its networks must exist (reset it on an organism).
        training: Learner name and parameters (``policy.training``).
        seed: Root seed of the learners.
    """

    def __init__(self, policy: EmrakulPolicy, training: TrainingConfig, seed: int) -> None:
        if policy.general is None:
            raise RuntimeError("the policy has no networks yet: reset it on an organism first")
        self.policy = policy
        self.name = training.learner
        specialist_seed = small_seed(seed, training.learner, "specialists")
        self.specialists: SpecialistLearner = make_learner(
            training.learner, policy, {"seed": specialist_seed, **training.learner_params}
        )
        self.general = MAPPOLearner(
            policy.general, policy.general.state_dim, 1,
            **{"seed": derive_seed(seed, "mappo", "general"), **training.general_params},
        )  # fmt: skip

    def learn(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """One update of both learners from ``episodes``; bumps the policy version.

        Returns:
            The learners' losses, prefixed ``specialists/`` and ``general/``.
        """
        for episode in episodes:
            for transition in episode.transitions:
                self.specialists.store(transition)
            self.specialists.finish_path(episode.bootstrap)
            for g in episode.general:
                self.general.store(
                    g.state.unsqueeze(0), _GENERAL_ID, g.state, g.action.unsqueeze(0),
                    g.log_prob.reshape(1), g.reward, g.done,
                )  # fmt: skip
            self.general.finish_path(episode.bootstrap, _GENERAL_ID)
        metrics = {f"specialists/{k}": v for k, v in self.specialists.update().items()}
        metrics.update({f"general/{k}": v for k, v in self.general.update().items()})
        self.policy.bump_version()
        return metrics

    def acting_state(self) -> dict[str, Any]:
        """What a replica needs to act with the current weights: the policy's networks and
        version, the learner's name and its acting state (QMIX: Q network and ε)."""
        state = self.policy.state_dict()
        return {
            "networks": {k: state[k] for k in ("obs_dim", "state_dim", "specialist", "general")},
            "policy_version": self.policy.policy_version,
            "learner": self.name,
            "learner_state": self.specialists.acting_state(),
        }

    def state_dict(self) -> dict[str, Any]:
        """The policy and both learners (tensors and plain data)."""
        return {
            "policy": self.policy.state_dict(),
            "specialists": self.specialists.state_dict(),
            "general": self.general.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.policy.load_state_dict(state["policy"])
        self.specialists.load_state_dict(state["specialists"])
        self.general.load_state_dict(state["general"])


def load_acting_state(policy: EmrakulPolicy, state: Mapping[str, Any], seed: int) -> None:
    """Give a replica's ``policy`` the learner's current weights (:meth:`CentralLearner.
    acting_state`), keeping its own episode state and sampling stream."""
    networks = state["networks"]
    if policy.specialist is None:
        policy.build(int(networks["obs_dim"]), int(networks["state_dim"]))
    assert policy.specialist is not None and policy.general is not None
    policy.specialist.load_state_dict(networks["specialist"])
    policy.general.load_state_dict(networks["general"])
    policy.policy_version = int(state["policy_version"])
    LEARNERS[state["learner"]].attach(policy, state["learner_state"], seed)
