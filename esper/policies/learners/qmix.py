"""QMIX: centralised training of decentralised per-layer Q-learners with a monotonic mixer.

Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent
Reinforcement Learning" (arXiv 1803.11485). Each agent (here: a layer of a network, at most
``max_agents`` per environment) acts greedily on its own utility ``Q_a``; during training the
utilities of the chosen actions are mixed into ``Q_tot`` by :class:`MonotonicMixer`, whose
weights are non-negative functions of the global state, and the whole is trained end to end on
the TD loss (Eq. 6)

    L(θ) = E_b [(y_tot − Q_tot(τ, u, s; θ))²],
    y_tot = r + γ (1 − d) Q_tot(τ', u*, s'; θ⁻),

with double-Q action selection ``u*_a = argmax_u Q_a(τ'_a, u; θ)`` evaluated by the target
networks ``θ⁻`` (van Hasselt et al. 2016), hard-copied every ``target_update`` updates. The
practical choices follow EPyMARL (Papoudakis et al. 2021): ε-greedy exploration annealed
linearly by environment steps, reward standardisation with running statistics, Adam over the
agent network *and* the mixer, and gradient-norm clipping. Environments with fewer agents than
``max_agents`` are padded; the agent mask removes padded slots from the mixture.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from esper.policies.learners.buffers import REPLAY_FIELDS, ReplayBuffer
from esper.policies.learners.qmix_networks import AgentQNetwork, MonotonicMixer, epsilon_greedy
from esper.seeding import derive_seed, generator

__all__ = ["QMIXLearner"]


class QMIXLearner:
    """A QMIX learner for a variable number (at most ``max_agents``) of homogeneous agents.

    All agents share one :class:`AgentQNetwork` fed with their local observation and a one-hot
    identity. Call :meth:`act` for decentralised ε-greedy actions, :meth:`store` after each
    environment step and :meth:`update` for one gradient step on a replay minibatch.

    Args:
        obs_dim: Size of one agent's observation.
        state_dim: Size of the global state fed to the mixer's hypernetworks.
        n_actions: Discrete actions per agent.
        max_agents: Most agents in any environment; smaller environments are padded.
        hidden: Width of the agent network's hidden layers.
        mixing_embed: Width of the mixing layer.
        hypernet_hidden: Width of the hypernetworks' hidden layer.
        lr: Adam learning rate (agent network and mixer).
        gamma: Discount factor.
        target_update: Updates between hard copies into the target networks.
        double_q: Pick next actions with the online agent network (value from the target).
        epsilon_start: Exploration rate before any environment step.
        epsilon_end: Exploration rate after ``epsilon_anneal`` environment steps.
        epsilon_anneal: Environment steps of the linear ε anneal.
        buffer_size: Replay capacity in transitions.
        batch_size: Transitions per update; :meth:`update` waits until the buffer holds this many.
        grad_clip: Maximum global gradient norm.
        standardise_rewards: Standardise rewards with running mean and std before the TD target.
            The mean shift is harmless for fixed-length episodes; with action-dependent episode
            lengths it changes the problem, so switch it off there.
        seed: Root seed; initialisation, exploration and sampling use derived streams.

    Attributes:
        agent: The shared :class:`AgentQNetwork`; ``target_agent`` is its target copy.
        mixer: The :class:`MonotonicMixer`; ``target_mixer`` is its target copy.
        optimizer: Adam over the parameters of ``agent`` and ``mixer`` together.
        buffer: The replay buffer (padded transitions, agent ``i`` in slot ``agent_ids[i]``).
        env_steps: Transitions stored so far (the clock of the ε schedule).
        updates: Gradient steps taken so far (the clock of the target updates).
    """

    def __init__(
        self,
        obs_dim: int,
        state_dim: int,
        n_actions: int,
        max_agents: int,
        *,
        hidden: int = 64,
        mixing_embed: int = 32,
        hypernet_hidden: int = 64,
        lr: float = 5e-4,
        gamma: float = 0.99,
        target_update: int = 200,
        double_q: bool = True,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        epsilon_anneal: int = 5000,
        buffer_size: int = 5000,
        batch_size: int = 32,
        grad_clip: float = 10.0,
        standardise_rewards: bool = True,
        seed: int = 0,
    ) -> None:
        sizes = dict(obs_dim=obs_dim, state_dim=state_dim, n_actions=n_actions)
        sizes |= dict(max_agents=max_agents, hidden=hidden, mixing_embed=mixing_embed)
        sizes |= dict(hypernet_hidden=hypernet_hidden, target_update=target_update)
        sizes |= dict(buffer_size=buffer_size, batch_size=batch_size)
        for name, value in sizes.items():
            if int(value) != value or value < 1:
                raise ValueError(f"QMIXLearner: {name} must be a positive integer, got {value!r}")
        if epsilon_anneal < 0:
            raise ValueError(f"QMIXLearner: epsilon_anneal must be >= 0, got {epsilon_anneal}")
        if not 0.0 <= epsilon_end <= epsilon_start <= 1.0:
            raise ValueError(
                "QMIXLearner: need 0 <= epsilon_end <= epsilon_start <= 1, got "
                f"epsilon_start={epsilon_start}, epsilon_end={epsilon_end}"
            )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"QMIXLearner: gamma must lie in [0, 1], got {gamma}")
        if lr <= 0 or grad_clip <= 0:
            raise ValueError(f"QMIXLearner: lr and grad_clip must be > 0, got {lr}, {grad_clip}")
        if batch_size > buffer_size:
            raise ValueError(
                f"QMIXLearner: batch_size ({batch_size}) exceeds buffer_size ({buffer_size}); "
                "raise buffer_size or lower batch_size"
            )
        self.obs_dim, self.state_dim = obs_dim, state_dim
        self.n_actions, self.max_agents = n_actions, max_agents
        self.gamma, self.target_update, self.double_q = gamma, target_update, double_q
        self.epsilon_start, self.epsilon_end = epsilon_start, epsilon_end
        self.epsilon_anneal, self.batch_size = epsilon_anneal, batch_size
        self.grad_clip, self.standardise_rewards = grad_clip, standardise_rewards
        # What must match on load: the networks' and buffers' shapes and the seed. The
        # learning hyperparameters (lr, γ, ε schedule, grad clip) stay this learner's own, so
        # a PBT member continues another's state with its explored values.
        self.lr = lr
        self._config = dict(sizes, seed=seed, double_q=double_q)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "qmix", "init"))
            self.agent = AgentQNetwork(obs_dim, max_agents, n_actions, hidden)
            self.mixer = MonotonicMixer(max_agents, state_dim, mixing_embed, hypernet_hidden)
        self.target_agent = copy.deepcopy(self.agent).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self._params = [*self.agent.parameters(), *self.mixer.parameters()]
        self.optimizer = torch.optim.Adam(self._params, lr=lr)
        self.buffer = ReplayBuffer(buffer_size, max_agents, obs_dim, state_dim)
        self._explore_gen = generator(seed, "qmix", "explore")
        self._sample_gen = generator(seed, "qmix", "sample")
        self.env_steps = 0
        self.updates = 0
        self._reward_stats = [0.0, 0.0, 0.0]  # Welford: count, mean, sum of squared deviations

    @property
    def epsilon(self) -> float:
        """The current ε: linear from ``epsilon_start`` to ``epsilon_end`` over env steps."""
        if self.epsilon_anneal == 0:
            return self.epsilon_end
        frac = min(1.0, self.env_steps / self.epsilon_anneal)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def q_values(self, obs: Tensor, agent_ids: Tensor) -> Tensor:
        """Each agent's action values ``Q_a(o_a, ·)`` from the online network (no gradient).

        Args:
            obs: ``[n_agents, obs_dim]`` local observations.
            agent_ids: ``[n_agents]`` distinct identities (layer indices) in ``[0, max_agents)``.

        Returns:
            ``[n_agents, n_actions]`` action values.
        """
        obs, agent_ids = self._check_agents(obs, agent_ids, "obs")
        with torch.no_grad():
            return self.agent(obs, agent_ids)

    def act(self, obs: Tensor, agent_ids: Tensor, explore: bool = True) -> Tensor:
        """Decentralised actions: per-agent argmax, ε-greedy when ``explore``.

        Each agent acts on its own utility only (Eq. 4: the argmax of ``Q_tot`` is the tuple of
        per-agent argmaxes), so execution needs no state and no mixer.

        Args:
            obs: ``[n_agents, obs_dim]`` local observations.
            agent_ids: ``[n_agents]`` distinct identities in ``[0, max_agents)``.
            explore: With probability :attr:`epsilon`, replace an agent's action by a uniform one.

        Returns:
            ``LongTensor[n_agents]`` actions, in the order of ``agent_ids``.
        """
        q = self.q_values(obs, agent_ids)
        return epsilon_greedy(q, self.epsilon, self._explore_gen, explore)

    def store(
        self,
        obs: Tensor,
        agent_ids: Tensor,
        state: Tensor,
        actions: Tensor,
        reward: float,
        next_obs: Tensor,
        next_state: Tensor,
        done: bool,
    ) -> None:
        """Record one environment step (a shared team reward) and advance the ε schedule.

        Args:
            obs: ``[n_agents, obs_dim]`` observations the actions were chosen on.
            agent_ids: ``[n_agents]`` distinct identities; ``next_obs`` has the same agents.
            state: ``[state_dim]`` global state.
            actions: ``[n_agents]`` actions taken, in the order of ``agent_ids``.
            reward: The team reward. If rewards come per agent, pass their mean, not their sum,
                so its scale does not grow with the number of agents.
            next_obs: ``[n_agents, obs_dim]`` observations after the step.
            next_state: ``[state_dim]`` global state after the step.
            done: Terminal step (no bootstrap). Pass ``False`` on a time-limit truncation.
        """
        obs, ids = self._check_agents(obs, agent_ids, "obs")
        next_obs, _ = self._check_agents(next_obs, agent_ids, "next_obs")
        actions = torch.as_tensor(actions, dtype=torch.long).reshape(-1)
        if actions.shape != ids.shape:
            raise ValueError(f"actions has shape {tuple(actions.shape)}; expected ({len(ids)},)")
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.n_actions):
            raise ValueError(f"actions must lie in [0, {self.n_actions}), got {actions.tolist()}")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        row = {
            "obs": self._pad(obs, ids),
            "actions": self._pad(actions, ids),
            "mask": self._pad(torch.ones_like(ids, dtype=torch.bool), ids),
            "state": self._check_state(state, "state"),
            "reward": torch.tensor(reward),
            "next_obs": self._pad(next_obs, ids),
            "next_state": self._check_state(next_state, "next_state"),
            "done": torch.tensor(float(bool(done))),
        }
        self.buffer.add(row)
        count, mean, m2 = self._reward_stats
        count += 1
        delta = reward - mean
        mean += delta / count
        self._reward_stats = [count, mean, m2 + delta * (reward - mean)]
        self.env_steps += 1

    def td_target(self, batch: dict[str, Tensor]) -> Tensor:
        """The TD target ``y_tot = r + γ (1 − d) Q_tot(τ', u*, s'; θ⁻)`` of a padded batch.

        ``u*`` is the online network's argmax with ``double_q`` and the target network's
        otherwise; the target mixer combines the target network's values of ``u*``. Rewards are
        standardised here when ``standardise_rewards`` is on.
        """
        with torch.no_grad():
            ids = self._slot_ids(batch["next_obs"].shape[0])
            target_q = self.target_agent(batch["next_obs"], ids)
            chooser = self.agent(batch["next_obs"], ids) if self.double_q else target_q
            best = chooser.argmax(dim=-1, keepdim=True)
            next_q = target_q.gather(-1, best).squeeze(-1)
            next_tot = self.target_mixer(next_q, batch["next_state"], batch["mask"])
            reward = self._standardise(batch["reward"])
            return reward + self.gamma * (1.0 - batch["done"]) * next_tot

    def update(self) -> dict[str, float]:
        """One gradient step of the TD loss (Eq. 6) on a replay minibatch.

        Returns:
            ``{}`` while the buffer holds fewer than ``batch_size`` transitions; otherwise the
            loss, the mean chosen-action value of real agents (``q_taken``), the means of
            ``Q_tot`` and of the target, the pre-clip gradient norm, ε and the update count.
        """
        if self.buffer.size < self.batch_size:
            return {}
        batch = self.buffer.sample(self.batch_size, self._sample_gen)
        target = self.td_target(batch)
        ids = self._slot_ids(self.batch_size)
        q = self.agent(batch["obs"], ids)
        q_taken = q.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
        q_tot = self.mixer(q_taken, batch["state"], batch["mask"])
        loss = (q_tot - target).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_update == 0:
            self._sync_targets()
        mask = batch["mask"]
        return {
            "loss": float(loss.detach()),
            "q_taken": float(q_taken.detach()[mask].mean()),
            "q_tot": float(q_tot.detach().mean()),
            "target": float(target.mean()),
            "grad_norm": float(grad_norm),
            "epsilon": self.epsilon,
            "updates": float(self.updates),
        }

    def state_dict(self) -> dict[str, Any]:
        """A deep-copied checkpoint from which training continues bit-identically.

        It holds the networks and their targets, the optimizer, the replay buffer, the RNG
        states of exploration and sampling, the counters and the reward statistics; it loads
        with ``torch.load(..., weights_only=True)``.
        """
        return copy.deepcopy(
            {
                "config": self._config,
                "agent": self.agent.state_dict(),
                "mixer": self.mixer.state_dict(),
                "target_agent": self.target_agent.state_dict(),
                "target_mixer": self.target_mixer.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "buffer": {**self.buffer.data, "pos": self.buffer.pos, "size": self.buffer.size},
                "explore_rng": self._explore_gen.get_state(),
                "sample_rng": self._sample_gen.get_state(),
                "env_steps": self.env_steps,
                "updates": self.updates,
                "reward_stats": self._reward_stats,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the architecture and seed must match, and the
        learning hyperparameters stay this learner's (its ``lr`` is set back into the
        optimizer's parameter groups after Adam's state is loaded)."""
        saved = {k: state["config"][k] for k in self._config if k in state["config"]}
        if saved != self._config:
            raise ValueError(
                f"QMIXLearner.load_state_dict: checkpoint config {state['config']} does not "
                f"match this learner's {self._config}; build the learner with the same arguments"
            )
        state = copy.deepcopy(state)
        self.agent.load_state_dict(state["agent"])
        self.mixer.load_state_dict(state["mixer"])
        self.target_agent.load_state_dict(state["target_agent"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        buffer = state["buffer"]
        for name in REPLAY_FIELDS:
            self.buffer.data[name].copy_(buffer[name])
        self.buffer.pos, self.buffer.size = int(buffer["pos"]), int(buffer["size"])
        self._explore_gen.set_state(state["explore_rng"])
        self._sample_gen.set_state(state["sample_rng"])
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self._reward_stats = [float(v) for v in state["reward_stats"]]

    def _sync_targets(self) -> None:
        self.target_agent.load_state_dict(self.agent.state_dict())
        self.target_mixer.load_state_dict(self.mixer.state_dict())

    def _standardise(self, reward: Tensor) -> Tensor:
        count, mean, m2 = self._reward_stats
        if not self.standardise_rewards or count < 2:
            return reward
        var = m2 / count
        return (reward - mean) / (math.sqrt(var) if var > 1e-12 else 1.0)

    def _slot_ids(self, batch: int) -> Tensor:
        return torch.arange(self.max_agents).expand(batch, self.max_agents)

    def _pad(self, values: Tensor, ids: Tensor) -> Tensor:
        out = values.new_zeros((self.max_agents, *values.shape[1:]))
        out[ids] = values
        return out

    def _check_state(self, state: Tensor, name: str) -> Tensor:
        state = torch.as_tensor(state, dtype=torch.float32)
        if state.shape != (self.state_dim,):
            raise ValueError(f"{name} has shape {tuple(state.shape)}; expected ({self.state_dim},)")
        return state

    def _check_agents(self, obs: Tensor, agent_ids: Tensor, name: str) -> tuple[Tensor, Tensor]:
        obs = torch.as_tensor(obs, dtype=torch.float32)
        ids = torch.as_tensor(agent_ids, dtype=torch.long).reshape(-1)
        n = ids.shape[0]
        if not 1 <= n <= self.max_agents:
            raise ValueError(
                f"got {n} agents but the learner supports 1 to max_agents={self.max_agents}; "
                "build it with a larger max_agents"
            )
        if obs.shape != (n, self.obs_dim):
            raise ValueError(f"{name} has shape {tuple(obs.shape)}; expected ({n}, {self.obs_dim})")
        if ids.min() < 0 or ids.max() >= self.max_agents or ids.unique().numel() != n:
            raise ValueError(
                f"agent_ids must be distinct integers in [0, {self.max_agents}), got {ids.tolist()}"
            )
        return obs, ids
