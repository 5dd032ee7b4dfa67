"""Experience storage: MAPPO's on-policy trajectories (GAE, value normalisation) and QMIX's
replay ring buffer.

Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438):
``δ_t = r_t + γ (1 − d_t) V(s_{t+1}) − V(s_t)`` and ``A_t = Σ_l (γλ)^l δ_{t+l}``, cut at episode
ends; the value target is ``A_t + V(s_t)``. Value normalisation (the running mean and standard
deviation of the targets, Yu et al. 2021, following PopArt's statistics without its output
rescaling) keeps the critic's regression well scaled whatever the reward's magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["REPLAY_FIELDS", "ReplayBuffer", "RolloutBuffer", "RunningMeanStd", "gae"]


class RunningMeanStd:
    """Running mean and variance of a scalar stream (Chan et al.'s parallel update).

    Args:
        epsilon: Initial pseudo-count (so the first batch does not divide by zero).
    """

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = epsilon

    def update(self, x: torch.Tensor) -> None:
        """Fold the values of ``x`` into the statistics."""
        x = x.detach().double().reshape(-1)
        if not x.numel():
            return
        batch_mean, batch_var, n = float(x.mean()), float(x.var(unbiased=False)), x.numel()
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        """Standard deviation (floored at 1e-4)."""
        return max(self.var, 1e-8) ** 0.5

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x − μ) / σ``."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x · σ + μ``."""
        return x * self.std + self.mean

    def state_dict(self) -> dict[str, float]:
        """Mean, variance and count."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets of one trajectory.

    Args:
        rewards: ``[T]`` team rewards.
        values: ``[T, n]`` value estimates ``V(s_t, i)``.
        dones: ``[T]`` 1 where the episode ended after step ``t``.
        last_values: ``[n]`` ``V(s_T, i)``, the bootstrap after the last step.
        gamma: Discount ``γ``.
        lam: GAE ``λ``.

    Returns:
        ``(advantages, returns)``, both ``[T, n]``.
    """
    steps = rewards.shape[0]
    adv = torch.zeros_like(values)
    running = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(steps)):
        alive = 1.0 - float(dones[t])
        delta = rewards[t] + gamma * alive * next_values - values[t]
        running = delta + gamma * lam * alive * running
        adv[t] = running
        next_values = values[t]
    return adv, adv + values


@dataclass
class _Step:
    obs: torch.Tensor
    ids: torch.Tensor
    state: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    value: torch.Tensor
    reward: float
    done: bool


@dataclass
class RolloutBuffer:
    """Steps of agent groups; :meth:`finish_path` turns them into flat per-agent samples.

    A sample's columns: ``obs``, ``ids``, ``state``, ``action``, ``log_prob``, ``advantage``,
    ``return`` and ``reward`` (its step's team reward, the target of MAPPO's auxiliary effect
    prediction).

    Within one path every step has the same agents (one organism); different paths may have
    different agent counts.

    Attributes:
        gamma: Discount ``γ``.
        lam: GAE ``λ``.
    """

    gamma: float = 0.99
    lam: float = 0.95
    _path: list[_Step] = field(default_factory=list)
    _rows: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(
        self,
        obs: torch.Tensor,
        ids: torch.Tensor,
        state: torch.Tensor,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        value: torch.Tensor,
        reward: float,
        done: bool,
    ) -> None:
        """Store one step: ``obs [n, d]``, ``ids [n]``, ``state [s]``, ``action [n, a]``,
        ``log_prob [n]``, ``value [n]`` (unnormalised), the team ``reward`` and ``done``."""
        if self._path and self._path[-1].ids.shape != ids.shape:
            raise ValueError("agents changed within a path: call finish_path() between organisms")
        self._path.append(
            _Step(
                obs.detach(), ids.detach(), state.detach(), action.detach(),
                log_prob.detach(), value.detach(), float(reward), bool(done),
            )
        )  # fmt: skip

    def finish_path(self, last_values: torch.Tensor) -> None:
        """Close the current path, bootstrapping from ``last_values`` ``[n]`` (0 if it ended)."""
        if not self._path:
            return
        rewards = torch.tensor([s.reward for s in self._path])
        dones = torch.tensor([float(s.done) for s in self._path])
        values = torch.stack([s.value for s in self._path])
        adv, ret = gae(rewards, values, dones, last_values.detach(), self.gamma, self.lam)
        n = values.shape[1]
        columns = {
            "obs": torch.cat([s.obs for s in self._path]),
            "ids": torch.cat([s.ids for s in self._path]),
            "state": torch.cat([s.state.expand(n, -1) for s in self._path]),
            "action": torch.cat([s.action for s in self._path]),
            "log_prob": torch.cat([s.log_prob for s in self._path]),
            "advantage": adv.reshape(-1),
            "return": ret.reshape(-1),
            "reward": rewards.repeat_interleave(n),  # the step's team reward, for every agent
        }
        for key, value in columns.items():
            self._rows.setdefault(key, []).append(value)
        self._path = []

    @property
    def pending(self) -> int:
        """Steps of the current, unfinished path."""
        return len(self._path)

    def __len__(self) -> int:
        """Finished per-agent samples."""
        return sum(t.shape[0] for t in self._rows.get("ids", []))

    def data(self) -> dict[str, torch.Tensor]:
        """All finished samples, concatenated."""
        return {k: torch.cat(v) for k, v in self._rows.items()}

    def clear(self) -> None:
        """Drop finished samples (the open path is kept)."""
        self._rows = {}

    def state_dict(self) -> dict[str, Any]:
        """The open path and the finished samples (tensors and plain data), so a learner
        checkpointed mid-episode continues exactly."""
        return {
            "path": [{f.name: getattr(step, f.name) for f in fields(step)} for step in self._path],
            "rows": {k: list(v) for k, v in self._rows.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output. Samples finished by an Esper that kept no
        ``reward`` column get ``nan`` rewards (unknown: the auxiliary regression skips them)."""
        self._path = [_Step(**step) for step in state["path"]]
        self._rows = {k: list(v) for k, v in state["rows"].items()}
        if self._rows and "reward" not in self._rows:
            self._rows["reward"] = [torch.full_like(a, math.nan) for a in self._rows["return"]]


REPLAY_FIELDS: tuple[str, ...] = (
    "obs",
    "actions",
    "mask",
    "state",
    "reward",
    "next_obs",
    "next_state",
    "done",
)


class ReplayBuffer:
    """A ring buffer of single transitions, agents padded to ``max_agents`` slots.

    Agent ``i`` of a transition sits in slot ``agent_ids[i]``, so a layer keeps its slot (and
    its row of mixing weights) across environments with different layer counts.
    """

    def __init__(self, capacity: int, max_agents: int, obs_dim: int, state_dim: int) -> None:
        self.capacity = capacity
        self.pos = 0
        self.size = 0
        self.data: dict[str, Tensor] = {
            "obs": torch.zeros(capacity, max_agents, obs_dim),
            "actions": torch.zeros(capacity, max_agents, dtype=torch.long),
            "mask": torch.zeros(capacity, max_agents, dtype=torch.bool),
            "state": torch.zeros(capacity, state_dim),
            "reward": torch.zeros(capacity),
            "next_obs": torch.zeros(capacity, max_agents, obs_dim),
            "next_state": torch.zeros(capacity, state_dim),
            "done": torch.zeros(capacity),
        }

    def add(self, row: dict[str, Tensor]) -> None:
        """Write one transition (already padded) over the oldest one when full."""
        for name in REPLAY_FIELDS:
            self.data[name][self.pos] = row[name]
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, gen: torch.Generator) -> dict[str, Tensor]:
        """A uniform minibatch, drawn with replacement."""
        idx = torch.randint(self.size, (batch_size,), generator=gen)
        return {name: self.data[name][idx] for name in REPLAY_FIELDS}
