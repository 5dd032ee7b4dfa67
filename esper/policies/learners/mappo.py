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

Auxiliary effect prediction (``aux_coef > 0``; auxiliary tasks on a shared trunk as in UNREAL,
Jaderberg et al. 2017, arXiv 1611.05397): a linear head on the actor's trunk
(:meth:`EffectActor.features`, the representation the action heads read) regresses each
sample's team reward, standardised over the batch, and ``aux_coef ×`` its mean squared error
joins the actor's loss. The reward is what the surgery did (with a ``policy.training.control``
twin, relative to the twin's accuracy on the same batches), so the trunk is pushed to encode
whatever in the observations predicts it, where the linear action heads can read it too; a
regression gives the trunk a gradient per sample, where PPO's credit is one noisy advantage per
surgery. The head starts at zero (predicting the batch mean) and has its own Adam at
``aux_lr``, so directions that predict nothing leave the trunk alone. With ``aux_coef = 0``
there is no head and the update is exactly plain MAPPO's.

One learner per timescale: the Specialists (many agents, every surgery) and the Surgeon General
(one agent, every ``M`` surgeries, rewarded with the sum of the ``M`` team rewards) each get a
:class:`MAPPOLearner`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.nn import functional as F

from esper.policies.emrakul.distribution import GaussianBernoulli
from esper.policies.learners.buffers import RolloutBuffer, RunningMeanStd

__all__ = ["Actor", "CentralCritic", "EffectActor", "MAPPOLearner"]

_MIN_TARGET_STD = 1e-8
"""Rewards of a batch spread less than this have nothing to predict: no auxiliary step."""


class Actor(Protocol):
    """What MAPPO needs of an actor: an ``nn.Module`` giving per-agent distributions."""

    def distribution(self, obs: torch.Tensor, ids: torch.Tensor) -> GaussianBernoulli:
        """Action distributions for observations ``[n, d]`` of agents ``ids`` ``[n]``."""
        ...

    def parameters(self) -> Any:
        """The trainable tensors."""
        ...


class EffectActor(Actor, Protocol):
    """An actor whose trunk MAPPO's auxiliary effect prediction can read (``aux_coef > 0``):
    :class:`~esper.policies.emrakul.specialist.SpecialistActor` and
    :class:`~esper.policies.emrakul.general.SurgeonGeneral`."""

    hidden_dim: int
    """Width of :meth:`features`."""

    def features(self, obs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The hidden representation ``[n, hidden_dim]`` the action heads read."""
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
        aux_coef: Weight of the auxiliary effect prediction in the actor's loss (0: none, plain
            MAPPO, the default here; the Specialists' learner defaults to
            :data:`~esper.policies.learners.specialists.SPECIALIST_AUX_COEF`). Needs an
            :class:`EffectActor`.
        aux_lr: Learning rate of the auxiliary head (the trunk learns at ``lr``). The head is a
            linear probe starting from zero while the trunk moves slowly: at the actor's
            ``5e-4`` it barely left zero in 60 steps of a toy problem (R² 0.06 of an attainable
            ~0.2), ``1e-2`` overshot on noisy 48-sample batches, ``3e-3`` got there steadily.
        seed: Seed of the critic's initialisation and of the minibatch shuffling.
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
        aux_coef: float = 0.0,
        aux_lr: float = 3e-3,
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
        if not (math.isfinite(aux_coef) and aux_coef >= 0.0):
            raise ValueError(
                f"aux_coef={aux_coef} must be a finite number ≥ 0 (0 turns the auxiliary effect "
                "prediction off)"
            )
        if aux_lr <= 0:
            raise ValueError(f"aux_lr={aux_lr} must be > 0 (aux_coef=0 turns the head off)")
        if aux_coef > 0 and not (hasattr(actor, "features") and hasattr(actor, "hidden_dim")):
            raise TypeError(
                f"aux_coef={aux_coef} needs an actor with features(obs, ids) and hidden_dim, the "
                f"trunk its head reads; {type(actor).__name__} has none: set aux_coef=0"
            )
        self.actor = actor
        self.aux_coef, self.aux_lr = aux_coef, aux_lr
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
        self.aux_head: nn.Linear | None = None
        self.aux_optimizer: torch.optim.Adam | None = None
        if aux_coef > 0:  # its own optimizer: the actor's keeps the parameter groups it had
            # Zeros (the batch mean, R² = 0) and no draw from torch's global generator.
            self.aux_head = nn.utils.skip_init(nn.Linear, cast(EffectActor, actor).hidden_dim, 1)
            nn.init.zeros_(self.aux_head.weight)
            nn.init.zeros_(self.aux_head.bias)
            self.aux_optimizer = torch.optim.Adam(self.aux_head.parameters(), lr=aux_lr, eps=1e-5)
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
            there is nothing to learn from). With the auxiliary effect prediction, when the
            batch's rewards vary: ``aux_loss``, the head's mean squared error on the
            standardised rewards over the minibatch steps, and ``aux_r2``, its ``R²`` on this
            batch before learning from it (out of sample: fresh experience, so > 0 means the
            trunk encodes something that predicts what surgeries do).
        """
        if not len(self.buffer):
            return {}
        data = self.buffer.data()
        self.buffer.clear()
        self.value_norm.update(data["return"])
        adv = data["advantage"]
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
        targets = self.value_norm.normalize(data["return"]).float()
        effects = self._effect_targets(data["reward"])
        n = adv.shape[0]
        size = max(1, n // self.minibatches)
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0}
        sums["clip_fraction"] = 0.0
        count = 0
        aux_r2 = None if effects is None else self._effect_r2(data["obs"], data["ids"], effects)
        aux_sum, aux_steps = 0.0, 0
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
                loss = policy_loss
                if effects is not None:
                    aux_loss = self._effect_loss(data["obs"][idx], data["ids"][idx], effects[idx])
                    if aux_loss is not None:
                        loss = policy_loss + self.aux_coef * aux_loss
                        aux_sum += float(aux_loss.detach())
                        aux_steps += 1
                self.actor_optimizer.zero_grad()
                if self.aux_optimizer is not None:
                    self.aux_optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
                self.actor_optimizer.step()
                if self.aux_head is not None and self.aux_optimizer is not None:
                    nn.utils.clip_grad_norm_(self.aux_head.parameters(), self.max_grad_norm)
                    self.aux_optimizer.step()
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
        if aux_r2 is not None and aux_steps:
            out["aux_loss"] = aux_sum / aux_steps
            out["aux_r2"] = aux_r2
        out["samples"] = float(n)
        out["lr"] = float(self.actor_optimizer.param_groups[0]["lr"])  # the rate it ran
        return out

    def _effect_targets(self, rewards: torch.Tensor) -> torch.Tensor | None:
        """The samples' rewards standardised over the batch (``nan`` where unknown); ``None``
        without the auxiliary head or when they do not vary."""
        if self.aux_head is None:
            return None
        known = torch.isfinite(rewards)
        if int(known.sum()) < 2:
            return None
        values = rewards[known].double()
        std = float(values.std(unbiased=False))
        if std < _MIN_TARGET_STD:
            return None
        return ((rewards.double() - float(values.mean())) / std).float()

    def _effect_loss(
        self, obs: torch.Tensor, ids: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor | None:
        """The head's mean squared error on the known targets (``None``: none known)."""
        assert self.aux_head is not None
        known = torch.isfinite(target)
        if not bool(known.any()):
            return None
        actor = cast(EffectActor, self.actor)
        prediction = self.aux_head(actor.features(obs[known], ids[known])).squeeze(-1)
        return F.mse_loss(prediction, target[known])

    @torch.no_grad()
    def _effect_r2(self, obs: torch.Tensor, ids: torch.Tensor, target: torch.Tensor) -> float:
        """``R² = 1 − SSE / SST`` of the head's predictions of the known targets."""
        known = torch.isfinite(target)
        sse = self._effect_loss(obs, ids, target)
        sst = target[known].var(unbiased=False)
        return 0.0 if sse is None else float(1.0 - sse / sst.clamp_min(_MIN_TARGET_STD))

    def state_dict(self) -> dict[str, Any]:
        """Critic, optimizers, value normalisation, shuffling stream, update count, the
        rollout buffer and, with ``aux_coef > 0``, the auxiliary head and its optimizer
        (tensors and plain data only)."""
        head, head_optimizer = self.aux_head, self.aux_optimizer
        return {
            "critic": self.critic.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "value_norm": self.value_norm.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
            "buffer": self.buffer.state_dict(),
            "aux_head": None if head is None else head.state_dict(),
            "aux_optimizer": None if head_optimizer is None else head_optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the actor's weights are restored with the policy).

        The state supplies what was learned (weights, Adam's moments, counters); the
        hyperparameters stay this learner's own: the learning rates are set back into the
        optimizers' parameter groups, which the optimizers' state would otherwise overwrite
        (after a PBT exploit the member runs its explored ``lr``, not its source's).

        The auxiliary head follows this learner's ``aux_coef`` too: a state saved without a
        head (by ``aux_coef = 0``, or by an Esper older than the head) leaves this learner's
        head as initialised, and a saved head is ignored by a learner with ``aux_coef = 0``."""
        self.critic.load_state_dict(state["critic"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        saved_head = state.get("aux_head")  # absent from checkpoints older than the head
        if self.aux_head is not None and self.aux_optimizer is not None and saved_head is not None:
            self.aux_head.load_state_dict(saved_head)
            self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        rates = [(self.actor_optimizer, self.lr), (self.critic_optimizer, self.critic_lr)]
        if self.aux_optimizer is not None:
            rates.append((self.aux_optimizer, self.aux_lr))
        for optimizer, lr in rates:
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.value_norm.load_state_dict(state["value_norm"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
        self.buffer.load_state_dict(state["buffer"])
