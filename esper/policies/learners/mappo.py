"""MAPPO: multi-agent PPO with a centralized critic (Yu et al. 2021, arXiv 2103.01955).

Actors act on local observations; one critic ``V(s, i)`` reads the global state ``s`` and the
agent's identity ``i`` (one-hot), so credit can differ between layers while execution stays
decentralized. The update, following ``marlbenchmark/on-policy``'s defaults:

* GAE(λ) advantages with ``γ = 0.99``, ``λ = 0.95`` (:func:`~esper.policies.learners.buffers.gae`),
  normalised over the batch;
* value normalisation: the critic regresses ``(G − μ) / σ`` with running ``μ, σ`` of the
  targets, with a Huber loss (δ = 10);
* the clipped surrogate ``−E[min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)]``, ``ε = 0.2``, with
  ``ρ = π(a|o) / π_old(a|o)``, plus an entropy bonus 0.01;
* a few epochs over shuffled minibatches, gradient norms clipped at 10, Adam at ``5e-4``.

One learner per timescale: the Specialists (many agents, every surgery) and the Surgeon General
(one agent, every ``M`` surgeries, rewarded with the sum of the ``M`` team rewards) each get a
:class:`MAPPOLearner`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from esper.policies.emrakul.distribution import GaussianBernoulli
from esper.policies.learners.buffers import RolloutBuffer, RunningMeanStd

__all__ = ["Actor", "CentralCritic", "MAPPOLearner"]


class Actor(Protocol):
    """What MAPPO needs of an actor: an ``nn.Module`` giving per-agent distributions."""

    def distribution(self, obs: torch.Tensor, ids: torch.Tensor) -> GaussianBernoulli:
        """Action distributions for observations ``[n, d]`` of agents ``ids`` ``[n]``."""
        ...

    def parameters(self) -> Any:
        """The trainable tensors."""
        ...


class CentralCritic(nn.Module):
    """``V(s, i)``: the global state concatenated with the agent's one-hot identity.

    Args:
        state_dim: Width of the global state.
        max_agents: Identity slots.
        hidden: Hidden width.
    """

    def __init__(self, state_dim: int, max_agents: int, hidden: int = 64) -> None:
        super().__init__()
        if state_dim < 1 or max_agents < 1:
            raise ValueError(f"state_dim={state_dim} and max_agents={max_agents} must be ≥ 1")
        self.max_agents = max_agents
        self.net = nn.Sequential(
            nn.Linear(state_dim + max_agents, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )

    def forward(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Normalised values ``[n]`` for states ``[n, s]`` and agent ids ``[n]``."""
        one_hot = F.one_hot(ids.long(), self.max_agents).float()
        x = torch.cat([state.float().clamp(-10.0, 10.0), one_hot], dim=1)
        return self.net(x).squeeze(-1)


class MAPPOLearner:
    """Centralized training of a shared actor with a centralized critic.

    Args:
        actor: The shared actor (``distribution(obs, ids)``); trained in place.
        state_dim: Width of the global state.
        max_agents: Agent identity slots of the critic.
        lr: Actor learning rate.
        critic_lr: Critic learning rate.
        gamma: Discount ``γ``.
        lam: GAE ``λ``.
        clip: PPO ratio clip ``ε``.
        entropy_coef: Entropy bonus weight.
        epochs: Passes over each batch.
        minibatches: Minibatches per pass.
        max_grad_norm: Gradient norm clip.
        huber_delta: Huber loss threshold on normalised values.
        hidden: Critic hidden width.
        seed: Seed of the critic's initialisation and the minibatch shuffling.
    """

    def __init__(
        self,
        actor: Actor,
        state_dim: int,
        max_agents: int,
        lr: float = 5e-4,
        critic_lr: float = 5e-4,
        gamma: float = 0.99,
        lam: float = 0.95,
        clip: float = 0.2,
        entropy_coef: float = 0.01,
        epochs: int = 5,
        minibatches: int = 1,
        max_grad_norm: float = 10.0,
        huber_delta: float = 10.0,
        hidden: int = 64,
        seed: int = 0,
    ) -> None:
        if not hasattr(actor, "distribution"):
            raise TypeError(f"{type(actor).__name__} has no distribution(obs, ids) method")
        if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
            raise ValueError(f"gamma={gamma} and lam={lam} must lie in [0, 1]")
        if clip <= 0 or epochs < 1 or minibatches < 1 or max_grad_norm <= 0 or lr <= 0:
            raise ValueError(
                f"need clip > 0 ({clip}), epochs ≥ 1 ({epochs}), minibatches ≥ 1 "
                f"({minibatches}), max_grad_norm > 0 ({max_grad_norm}), lr > 0 ({lr})"
            )
        self.actor = actor
        self.clip = clip
        self.entropy_coef = entropy_coef
        self.epochs = epochs
        self.minibatches = minibatches
        self.max_grad_norm = max_grad_norm
        self.huber_delta = huber_delta
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.critic = CentralCritic(state_dim, max_agents, hidden)
        self.lr, self.critic_lr = lr, critic_lr
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=lr, eps=1e-5)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, eps=1e-5)
        self.value_norm = RunningMeanStd()
        self.buffer = RolloutBuffer(gamma, lam)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.updates = 0

    @torch.no_grad()
    def values(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``V(s, i)`` ``[n]`` for one global state ``[s]`` and agents ``ids``."""
        states = state.reshape(1, -1).expand(ids.shape[0], -1)
        return self.value_norm.denormalize(self.critic(states, ids))

    def store(
        self,
        obs: torch.Tensor,
        ids: torch.Tensor,
        state: torch.Tensor,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        reward: float,
        done: bool,
    ) -> None:
        """Store one step of the agents ``ids`` (the critic's value is computed here)."""
        self.buffer.add(obs, ids, state, action, log_prob, self.values(state, ids), reward, done)

    def finish_path(self, last_state: torch.Tensor | None, ids: torch.Tensor) -> None:
        """Close the current path; bootstrap from ``V(last_state)`` (``None``: it ended)."""
        last = torch.zeros(ids.shape[0]) if last_state is None else self.values(last_state, ids)
        self.buffer.finish_path(last)

    def update(self) -> dict[str, float]:
        """PPO epochs over the finished samples, then clear them.

        Returns:
            Mean ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``,
            the sample count and the actor's ``lr`` as its optimizer holds it (empty dict if
            there is nothing to learn from).
        """
        if not len(self.buffer):
            return {}
        data = self.buffer.data()
        self.buffer.clear()
        self.value_norm.update(data["return"])
        adv = data["advantage"]
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
        targets = self.value_norm.normalize(data["return"]).float()
        n = adv.shape[0]
        size = max(1, n // self.minibatches)
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0}
        sums["clip_fraction"] = 0.0
        count = 0
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, size):
                idx = order[start : start + size]
                dist = self.actor.distribution(data["obs"][idx], data["ids"][idx])
                log_prob = dist.log_prob(data["action"][idx])
                ratio = torch.exp(log_prob - data["log_prob"][idx])
                a = adv[idx]
                surrogate = torch.min(ratio * a, ratio.clamp(1 - self.clip, 1 + self.clip) * a)
                entropy = dist.entropy().mean()
                policy_loss = -surrogate.mean() - self.entropy_coef * entropy
                self.actor_optimizer.zero_grad()
                policy_loss.backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
                self.actor_optimizer.step()
                value = self.critic(data["state"][idx], data["ids"][idx])
                value_loss = F.huber_loss(value, targets[idx], delta=self.huber_delta)
                self.critic_optimizer.zero_grad()
                value_loss.backward()
                nn.utils.clip_grad_norm_(self.critic.parameters(), self.max_grad_norm)
                self.critic_optimizer.step()
                with torch.no_grad():
                    log_ratio = log_prob - data["log_prob"][idx]
                    sums["approx_kl"] += float(((ratio - 1) - log_ratio).mean())
                    sums["clip_fraction"] += float(((ratio - 1).abs() > self.clip).float().mean())
                sums["policy_loss"] += float(policy_loss.detach())
                sums["value_loss"] += float(value_loss.detach())
                sums["entropy"] += float(entropy.detach())
                count += 1
        self.updates += 1
        out = {k: v / count for k, v in sums.items()}
        out["samples"] = float(n)
        out["lr"] = float(self.actor_optimizer.param_groups[0]["lr"])  # the rate it ran
        return out

    def state_dict(self) -> dict[str, Any]:
        """Critic, optimizers, value normalisation, shuffling stream, update count and the
        rollout buffer (tensors and plain data only)."""
        return {
            "critic": self.critic.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "value_norm": self.value_norm.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
            "buffer": self.buffer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the actor's weights are restored with the policy).

        The state supplies what was learned (weights, Adam's moments, counters); the
        hyperparameters stay this learner's own: the learning rates are set back into the
        optimizers' parameter groups, which the optimizers' state would otherwise overwrite
        (after a PBT exploit the member runs its explored ``lr``, not its source's)."""
        self.critic.load_state_dict(state["critic"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        for optimizer, lr in (
            (self.actor_optimizer, self.lr),
            (self.critic_optimizer, self.critic_lr),
        ):
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.value_norm.load_state_dict(state["value_norm"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
        self.buffer.load_state_dict(state["buffer"])
