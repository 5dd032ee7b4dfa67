"""The registered Specialist learners: MAPPO and QMIX behind :class:`SpecialistLearner`.

* ``mappo`` (Yu et al. 2021): trains the policy's continuous Specialist actor with a
  centralized critic ``V(s, i)``; one PPO update per episode, bootstrapped from the critic's
  value of the last state.
* ``qmix`` (Rashid et al. 2018): per-layer Q-learners over the discrete action table
  (:data:`~esper.policies.emrakul.actions.DISCRETE_ACTIONS`) mixed by a monotonic network; the
  policy acts through the learner's Q network (ε-greedy while exploring). Like EPyMARL's
  episode runner, it learns at the end of each episode: one gradient step per surgery stored
  since the last update (a replay ratio of one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from esper.policies.emrakul.actions import N_DISCRETE_ACTIONS
from esper.policies.learners.mappo import MAPPOLearner
from esper.policies.learners.protocol import LEARNERS, SpecialistLearner, Transition
from esper.policies.learners.qmix import QMIXLearner
from esper.policies.learners.qmix_networks import AgentQNetwork, epsilon_greedy
from esper.registry import build
from esper.seeding import generator

if TYPE_CHECKING:
    from esper.policies.emrakul.policy import EmrakulPolicy

__all__ = ["SPECIALIST_AUX_COEF", "EpsilonGreedyHead", "MAPPOSpecialists", "QMIXSpecialists"]

SPECIALIST_AUX_COEF = 0.5
"""The Specialists' ``aux_coef`` (MAPPO's auxiliary effect prediction) unless
``policy.training.learner_params.aux_coef`` sets one; 0 turns it off.

0.5 is shared-trunk PPO's usual weight of its value regression (``vf_coef``, Schulman et al.
2017), the closest analogue. Measured on a toy whose reward is a noisy linear function of one
observed feature (as in ``tests/policies/test_mappo_aux.py``; 6 seeds, 60 Adam steps): the
trunk's response to that feature over its response to an irrelevant one was 0.7–1.1 without the
head, 1.0–1.5 at 0.1, 1.5–2.1 at 0.5 and 1.7–2.3 at 1.0, with PPO's approximate KL no higher.
Where nothing in the observations predicts the reward the zero-initialised head stays near zero
and leaves the trunk alone (a tiny organism's 96-surgery training was unchanged to three
decimals), so a weight this high costs little where there is nothing to learn."""


def _networks(policy: EmrakulPolicy) -> tuple[int, int]:
    if policy.specialist is None or policy.general is None:
        raise RuntimeError("the policy has no networks yet: reset it on an organism first")
    return policy.specialist.obs_dim, policy.general.state_dim


@LEARNERS.register("mappo")
class MAPPOSpecialists(SpecialistLearner):
    """MAPPO on the policy's shared Specialist actor.

    Args:
        policy: The policy whose actor is trained in place.
        **params: :class:`MAPPOLearner` keyword arguments (``lr``, ``gamma``, ``seed``,
            ``aux_coef``, ...); ``aux_coef`` defaults to :data:`SPECIALIST_AUX_COEF` here (plain
            :class:`MAPPOLearner`, the General's, has none unless asked).
    """

    name = "mappo"
    trains_actor = True
    params_class = MAPPOLearner

    def __init__(self, policy: EmrakulPolicy, **params: Any) -> None:
        _, state_dim = _networks(policy)
        assert policy.specialist is not None
        self.params = {"aux_coef": SPECIALIST_AUX_COEF, **params}
        self.mappo = build(
            MAPPOLearner,
            self.params,
            "learner 'mappo'",
            fixed={"actor": policy.specialist, "state_dim": state_dim,
                   "max_agents": policy.max_layers},
        )  # fmt: skip
        self._ids: torch.Tensor | None = None

    def store(self, transition: Transition) -> None:
        """Add the step to the open path (the critic's values are computed here)."""
        t = transition
        self.mappo.store(t.obs, t.ids, t.state, t.action, t.log_prob, t.reward, t.done)
        self._ids = t.ids

    def finish_path(self, bootstrap: torch.Tensor | None) -> None:
        """Close the path, bootstrapping from the critic's ``V(bootstrap)``."""
        if self._ids is not None:
            self.mappo.finish_path(bootstrap, self._ids)
            self._ids = None

    def update(self) -> dict[str, float]:
        """The PPO epochs over the finished paths."""
        return self.mappo.update()

    def state_dict(self) -> dict[str, Any]:
        """The MAPPO learner's state (critic, optimizers, statistics, open path)."""
        return {"mappo": self.mappo.state_dict(), "ids": self._ids}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.mappo.load_state_dict(state["mappo"])
        self._ids = state["ids"]


@LEARNERS.register("qmix")
class QMIXSpecialists(SpecialistLearner):
    """QMIX over the discrete Specialist table; installs itself as the policy's discrete head.

    Args:
        policy: The policy that will act through this learner's Q network.
        **params: :class:`QMIXLearner` keyword arguments (``lr``, ``batch_size``, ``seed``, ...).
    """

    name = "qmix"
    params_class = QMIXLearner

    def __init__(self, policy: EmrakulPolicy, **params: Any) -> None:
        if policy.codec.protect:
            raise ValueError(
                "policy.params.protect=true is a bit of the continuous actor; qmix's discrete "
                "table has no protecting action: use policy.training.learner=mappo"
            )
        obs_dim, state_dim = _networks(policy)
        self.params = dict(params)
        self.qmix = build(
            QMIXLearner,
            self.params,
            "learner 'qmix'",
            fixed={"obs_dim": obs_dim, "state_dim": state_dim, "n_actions": N_DISCRETE_ACTIONS,
                   "max_agents": policy.max_layers},
        )  # fmt: skip
        self._pending = 0
        self.qmix_hidden = int(self.qmix._config["hidden"])
        policy.discrete = True
        policy.q_agent = self.qmix

    def store(self, transition: Transition) -> None:
        """Add the transition to the replay buffer."""
        t = transition
        self.qmix.store(t.obs, t.ids, t.state, t.action, t.reward, t.next_obs, t.next_state, t.done)
        self._pending += 1

    def update(self) -> dict[str, float]:
        """One gradient step per transition stored since the last update; mean loss and the
        ``lr`` the optimizer ran."""
        losses = [self.qmix.update().get("loss", float("nan")) for _ in range(self._pending)]
        self._pending = 0
        finite = [x for x in losses if x == x]
        lr = float(self.qmix.optimizer.param_groups[0]["lr"])
        return {"loss": sum(finite) / len(finite), "lr": lr} if finite else {}

    def acting_state(self) -> dict[str, Any]:
        """The Q network (weights and sizes) and the current ε."""
        q = self.qmix
        return {
            "agent": {k: v.detach().clone() for k, v in q.agent.state_dict().items()},
            "sizes": {"obs_dim": q.obs_dim, "max_agents": q.max_agents,
                      "n_actions": q.n_actions, "hidden": self.qmix_hidden},
            "epsilon": q.epsilon,
        }  # fmt: skip

    @classmethod
    def attach(cls, policy: EmrakulPolicy, state: Mapping[str, Any], seed: int) -> None:
        """Give a replica's policy an ε-greedy head over a copy of the Q network."""
        head = policy.q_agent
        if not isinstance(head, EpsilonGreedyHead):
            head = EpsilonGreedyHead(AgentQNetwork(**state["sizes"]), seed)
        head.load(state)
        policy.discrete = True
        policy.q_agent = head

    def state_dict(self) -> dict[str, Any]:
        """The QMIX learner's state (networks, targets, optimizer, replay, generators)."""
        return {"qmix": self.qmix.state_dict(), "pending": self._pending}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.qmix.load_state_dict(state["qmix"])
        self._pending = int(state["pending"])


class EpsilonGreedyHead:
    """A replica's discrete Specialist head: a copy of QMIX's Q network acting ε-greedily.

    Args:
        agent: The Q network (weights loaded by :meth:`load`).
        seed: Seed of this replica's exploration stream.
    """

    def __init__(self, agent: AgentQNetwork, seed: int) -> None:
        self.agent = agent.requires_grad_(False)
        self.epsilon = 0.0
        self.generator = generator(seed, "qmix", "replica-explore")

    def load(self, state: Mapping[str, Any]) -> None:
        """Take the learner's current weights and ε."""
        self.agent.load_state_dict(state["agent"])
        self.epsilon = float(state["epsilon"])

    def act(self, obs: torch.Tensor, agent_ids: torch.Tensor, explore: bool) -> torch.Tensor:
        """ε-greedy actions ``[n]`` of agents ``agent_ids`` on observations ``obs``."""
        with torch.no_grad():
            q = self.agent(obs.float(), agent_ids.long())
        return epsilon_greedy(q, self.epsilon, self.generator, explore)
