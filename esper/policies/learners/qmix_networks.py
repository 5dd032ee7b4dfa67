"""The two networks of QMIX: a shared per-agent Q network and the monotonic mixing network.

QMIX (Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent
Reinforcement Learning", arXiv 1803.11485) factorises the joint action value as
``Q_tot(τ, u, s) = f_s(Q_1(τ_1, u_1), …, Q_n(τ_n, u_n))`` with ``∂Q_tot/∂Q_a ≥ 0`` for every
agent ``a`` (Eq. 5), so the joint greedy action is the tuple of per-agent greedy actions (Eq. 4).
Monotonicity is enforced by producing the mixing weights from hypernetworks of the global state
``s`` and taking their absolute value; biases are unconstrained (Section 4.1). The layout follows
EPyMARL's ``modules/mixers/qmix.py`` with two-layer hypernetworks.

Here the agents are the layers of a network, at most ``max_agents`` of them; environments with
fewer layers are padded, and an agent mask removes the padded slots from the mixture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AgentQNetwork",
    "MonotonicMixer",
    "epsilon_greedy",
]


class AgentQNetwork(nn.Module):
    """The per-agent utility ``Q_a(o_a, ·)`` shared by all agents.

    Parameter sharing with a one-hot agent identity appended to the observation, as in the QMIX
    paper's experiments (Section 6.2). No recurrence: a surgery decision is Markov given the
    layer's observation.

    Args:
        obs_dim: Size of one agent's local observation.
        max_agents: Size of the one-hot agent identity.
        n_actions: Number of discrete actions per agent.
        hidden: Width of the two hidden layers.
    """

    def __init__(self, obs_dim: int, max_agents: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.max_agents = max_agents
        self.net = nn.Sequential(
            nn.Linear(obs_dim + max_agents, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_actions),
        )

    def forward(self, obs: Tensor, agent_ids: Tensor) -> Tensor:
        """Per-agent action values.

        Args:
            obs: Observations ``[..., obs_dim]``.
            agent_ids: Integer identities in ``[0, max_agents)`` with shape ``obs.shape[:-1]``.

        Returns:
            ``[..., n_actions]`` action values.
        """
        identity = F.one_hot(agent_ids.long(), self.max_agents).to(obs.dtype)
        return self.net(torch.cat([obs, identity], dim=-1))


class MonotonicMixer(nn.Module):
    """QMIX's mixing network: ``Q_tot`` is a monotone function of the agents' values.

    ``Q_tot = ELU(q · |W_1(s)| + b_1(s)) · |w_2(s)| + V(s)`` (Section 4.1), where ``W_1`` and
    ``w_2`` come from two-layer hypernetworks of the state, ``b_1`` from a linear one and the
    final bias ``V(s)`` from a two-layer network with a ReLU. Since every weight on a path from
    ``q_a`` to ``Q_tot`` is non-negative and ELU is increasing, ``∂Q_tot/∂q_a ≥ 0`` (Eq. 5).
    Padded agents get weight exactly zero, so they neither change ``Q_tot`` nor receive gradient.

    Args:
        max_agents: Number of agent slots (the mixer has one weight row per slot).
        state_dim: Size of the global state.
        embed: Width of the mixing layer.
        hypernet_hidden: Width of the hypernetworks' hidden layer.
    """

    def __init__(self, max_agents: int, state_dim: int, embed: int, hypernet_hidden: int) -> None:
        super().__init__()
        self.max_agents = max_agents
        self.embed = embed
        self.hyper_w1 = nn.Sequential(
            nn.Linear(state_dim, hypernet_hidden),
            nn.ReLU(),
            nn.Linear(hypernet_hidden, max_agents * embed),
        )
        self.hyper_w2 = nn.Sequential(
            nn.Linear(state_dim, hypernet_hidden),
            nn.ReLU(),
            nn.Linear(hypernet_hidden, embed),
        )
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.value = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, agent_qs: Tensor, state: Tensor, agent_mask: Tensor) -> Tensor:
        """Mix per-agent values into ``Q_tot``.

        Args:
            agent_qs: ``[batch, max_agents]`` chosen-action values (padded slots arbitrary).
            state: ``[batch, state_dim]`` global states.
            agent_mask: ``[batch, max_agents]`` booleans, ``True`` for real agents.

        Returns:
            ``[batch]`` joint action values.
        """
        batch = agent_qs.shape[0]
        mask = agent_mask.to(agent_qs.dtype)
        # Zero both the padded values and their weights: the mixture ignores them exactly and
        # non-finite padding cannot leak through 0·inf.
        qs = torch.where(agent_mask, agent_qs, torch.zeros_like(agent_qs))
        w1 = self.hyper_w1(state).abs().view(batch, self.max_agents, self.embed)
        w1 = w1 * mask.unsqueeze(-1)
        b1 = self.hyper_b1(state).unsqueeze(1)
        hidden = F.elu(torch.bmm(qs.unsqueeze(1), w1) + b1)
        w2 = self.hyper_w2(state).abs().unsqueeze(-1)
        return (torch.bmm(hidden, w2) + self.value(state).unsqueeze(-1)).view(batch)


def epsilon_greedy(
    q: torch.Tensor, epsilon: float, generator: torch.Generator, explore: bool = True
) -> torch.Tensor:
    """Per-agent argmax of ``q`` ``[n, actions]``; when ``explore``, each agent's action is
    replaced by a uniform one with probability ``epsilon``. Both random streams are drawn on
    every exploring call, so the generator advances the same way whatever ``epsilon`` is."""
    greedy = q.argmax(dim=-1)
    if not explore:
        return greedy
    n = greedy.shape[0]
    explore_mask = torch.rand(n, generator=generator) < epsilon
    random = torch.randint(q.shape[-1], (n,), generator=generator)
    return torch.where(explore_mask, random, greedy)
