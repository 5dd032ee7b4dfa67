"""A deep Q-learning agent as a stream: the organism's host acts, the stream learns to ask.

An organism trains its host on ``stream.next_batch()`` with the loss of the stream's kind. For
an agent the host is a Q-network and :class:`AgentStream` is its world: each batch, the host
acts ε-greedily in a gymnasium environment under dynamics drifts
(:mod:`esper.workloads.rl.dynamics`, moved between distributions by the workload's schedule),
the transitions go to a replay buffer, and the batch is a replay minibatch with its temporal-
difference targets ``r + γ (1 − done) max_a' Q_target(s', a')`` from a periodically copied
target network — DQN as in Mnih et al. (Nature 2015), written in the single-file manner of
CleanRL's ``dqn.py`` (Huang et al., JMLR 2022). The host trains on it like any other batch
(kind ``q_learning``: the squared error of ``Q(s, a)`` against the target), so the Scalpel,
sensors, policies and event log need no special case.

The batch's online score is the agent's episodic return over the last ``return_window``
finished episodes, normalised to ``[0, 1]`` by the environment's return range
(:data:`ENVIRONMENTS`): the analogue of online accuracy, which the reward's accuracy term and
every report read unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from esper.seeding import derive_seed
from esper.workloads.datasets import SOURCES, Source
from esper.workloads.rl.dynamics import DriftingEnv, EnvDrift
from esper.workloads.rl.env_state import load_env_state, save_env_state
from esper.workloads.schedules import Schedule
from esper.workloads.stream import Batch

__all__ = ["ENVIRONMENTS", "AgentSource", "AgentStream", "EnvSpec"]


@dataclass(frozen=True)
class EnvSpec:
    """A gymnasium environment and the range its episodic returns normalise by."""

    gym_id: str
    worst_return: float
    best_return: float


ENVIRONMENTS: dict[str, EnvSpec] = {
    "cartpole": EnvSpec("CartPole-v1", 0.0, 500.0),
    "acrobot": EnvSpec("Acrobot-v1", -500.0, 0.0),
    "mountain_car": EnvSpec("MountainCar-v0", -200.0, -100.0),
    "minatar_breakout": EnvSpec("MinAtar/Breakout-v1", 0.0, 30.0),
    "minatar_space_invaders": EnvSpec("MinAtar/SpaceInvaders-v1", 0.0, 100.0),
    "minatar_asterix": EnvSpec("MinAtar/Asterix-v1", 0.0, 30.0),
}
"""Agent sources by registry name: the environment and its return range (a random policy sits
near the worst; the best is the time limit for CartPole, a fast swing-up or climb for the other
classic-control tasks, and for MinAtar (Young & Tian 2019, 10×10 Atari-like games, no ROMs) a
scale of our choosing, not a published score: set ``best_return`` for your study)."""


def _make_env(gym_id: str) -> gym.Env[Any, Any]:
    if gym_id.startswith("MinAtar/") and gym_id not in gym.registry:
        from minatar.gym import register_envs  # gymnasium ≥ 1 loads no plugins by itself

        register_envs()
    return gym.make(gym_id)


class AgentSource(Source):
    """What an organism reads of an agent's world: observation shape, action count, kind
    ``q_learning``; the DQN settings travel with it to the :class:`AgentStream`.

    Args:
        env: Key of :data:`ENVIRONMENTS`.
        gamma: Discount of the TD targets.
        buffer_size: Transitions the replay buffer keeps.
        epsilon_start: Exploration rate at the first step.
        epsilon_end: Exploration rate after ``exploration_steps`` environment steps.
        exploration_steps: Steps of the linear decay of ε.
        target_period: Batches between copies of the host into the target network.
        env_steps: Environment steps per batch (per training step of the host).
        return_window: Finished episodes the online score averages.
        worst_return: The return normalised to 0 (``None``: the environment's, above).
        best_return: The return normalised to 1 (``None``: the environment's).
    """

    def __init__(
        self,
        env: str = "cartpole",
        gamma: float = 0.99,
        buffer_size: int = 10_000,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        exploration_steps: int = 2_000,
        target_period: int = 100,
        env_steps: int = 1,
        return_window: int = 10,
        worst_return: float | None = None,
        best_return: float | None = None,
    ) -> None:
        if env not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {env!r}; valid: {', '.join(ENVIRONMENTS)}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {gamma}")
        if not 0.0 <= epsilon_end <= epsilon_start <= 1.0:
            raise ValueError(f"need 0 ≤ epsilon_end ≤ epsilon_start ≤ 1, got {epsilon_end}, "
                             f"{epsilon_start}")  # fmt: skip
        for key, value in (("buffer_size", buffer_size), ("exploration_steps", exploration_steps),
                           ("target_period", target_period), ("env_steps", env_steps),
                           ("return_window", return_window)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{key} must be ≥ 1, got {value}")
        spec = ENVIRONMENTS[env]
        worst = spec.worst_return if worst_return is None else worst_return
        best = spec.best_return if best_return is None else best_return
        if not (math.isfinite(worst) and math.isfinite(best) and worst < best):
            raise ValueError(f"need worst_return < best_return, got {worst}, {best}")
        self.spec = EnvSpec(spec.gym_id, worst, best)
        probe = _make_env(self.spec.gym_id)
        if not isinstance(probe.action_space, gym.spaces.Discrete):
            raise ValueError(f"{env}: DQN needs discrete actions")
        self.name = env
        self.input_shape = tuple(int(s) for s in probe.observation_space.shape or ())
        self.num_outputs = int(probe.action_space.n)
        self.kind = "q_learning"
        self.gamma, self.buffer_size, self.target_period = gamma, buffer_size, target_period
        self.epsilon = (epsilon_start, epsilon_end, exploration_steps)
        self.env_steps, self.return_window = env_steps, return_window

    def sample(
        self,
        gen: torch.Generator,
        n: int,
        distribution: int,
        classes: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard-normal observations and zero targets: shapes for preparing sensors (an
        agent's real data comes from acting, :class:`AgentStream`)."""
        return torch.randn(n, *self.input_shape, generator=gen), torch.zeros(n, 3)

    def normalise(self, episode_return: float) -> float:
        """``episode_return`` mapped to ``[0, 1]`` by the environment's return range."""
        spec = self.spec
        unit = (episode_return - spec.worst_return) / (spec.best_return - spec.worst_return)
        return min(1.0, max(0.0, unit))


for _name in ENVIRONMENTS:
    SOURCES.register(_name)(lambda env=_name, **params: AgentSource(env, **params))


class AgentStream:
    """An agent's experience as a stream of replay minibatches (see the module docstring).

    Its batches depend on the host (it acts with it and copies it into the target network),
    so they cannot be drawn ahead of the training steps: ``acts_with_host`` says so to
    whoever would (a :class:`~esper.workloads.cohort.Cohort` refuses such a stream).

    Args:
        source: The environment and DQN settings.
        drifts: Dynamics drifts applied to the environment.
        schedule: Which distribution is active at each step (the dominant one in a blend).
        batch_size: Transitions per minibatch.
        seed: Seeds the environment, the drifts, exploration and replay sampling.
        num_tasks: Length of the stream in tasks.
    """

    acts_with_host: ClassVar[bool] = True

    def __init__(
        self,
        source: AgentSource,
        drifts: Sequence[EnvDrift],
        schedule: Schedule,
        batch_size: int,
        seed: int,
        num_tasks: int = 5,
    ) -> None:
        self.source, self.schedule, self.batch_size = source, schedule, batch_size
        self.seed, self.num_tasks = seed, num_tasks
        self.env = DriftingEnv(_make_env(source.spec.gym_id), drifts, seed)
        self.drift_name = "+".join(d.name for d in drifts) or "none"
        self._rng = np.random.default_rng(derive_seed(seed, "agent", "acting"))
        self._gen = torch.Generator()
        self._gen.manual_seed(derive_seed(seed, "agent", "replay"))
        n, d = source.buffer_size, math.prod(source.input_shape)
        self._obs = np.zeros((n, d), np.float32)
        self._next = np.zeros((n, d), np.float32)
        self._act = np.zeros(n, np.int64)
        self._rew = np.zeros(n, np.float32)
        self._done = np.zeros(n, np.float32)
        self._size = self._pos = 0
        self._step = self._env_steps = 0
        self._returns: list[float] = []
        self._episode_return = 0.0
        self._exposure: dict[int, float] = {}
        self._host: nn.Module | None = None
        self._target: dict[str, torch.Tensor] = {}
        self._current, _ = self.env.reset(seed=derive_seed(seed, "agent", "env") % 2**31)

    def __len__(self) -> int:
        return self.num_tasks * self.schedule.task_length

    @property
    def step(self) -> int:
        """Batches taken so far (the index of the next one)."""
        return self._step

    def bind_agent(self, host: nn.Module) -> None:
        """The Q-network that acts (the organism's host) and the first target copy of it."""
        self._host = host
        self._copy_target()

    def _copy_target(self) -> None:
        assert self._host is not None
        self._target = {k: v.detach().clone() for k, v in self._host.state_dict().items()}

    def _device(self) -> torch.device:
        assert self._host is not None
        return next(self._host.parameters()).device

    def epsilon(self) -> float:
        """The exploration rate at the current environment step (linear decay)."""
        start, end, steps = self.source.epsilon
        return end + (start - end) * max(0.0, 1.0 - self._env_steps / steps)

    def _act_in_env(self, distribution: int) -> None:
        if self._host is None:
            raise RuntimeError("AgentStream needs its acting network: call bind_agent(host)")
        if distribution != self.env.task:
            self.env.set_task(distribution)
        if self._rng.uniform() < self.epsilon():
            action = int(self._rng.integers(self.source.num_outputs))
        else:
            with torch.no_grad():
                obs = torch.as_tensor(self._current, dtype=torch.float32, device=self._device())
                action = int(self._host(obs.unsqueeze(0)).argmax(dim=1).item())
        nxt, reward, terminated, truncated, _ = self.env.step(action)
        i = self._pos
        self._obs[i], self._act[i], self._rew[i] = np.ravel(self._current), action, float(reward)
        self._next[i], self._done[i] = np.ravel(nxt), float(terminated)
        self._pos = (self._pos + 1) % self.source.buffer_size
        self._size = min(self._size + 1, self.source.buffer_size)
        self._env_steps += 1
        self._episode_return += float(reward)
        self._current = nxt
        if terminated or truncated:
            self._returns = [*self._returns, self._episode_return][-self.source.return_window :]
            self._episode_return = 0.0
            self._current, _ = self.env.reset()

    def _minibatch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A replay minibatch: observations and ``(action, TD target, done)`` rows (the loss
        reads the first two; the contact-aware Fisher's rule the third)."""
        index = torch.randint(self._size, (self.batch_size,), generator=gen).numpy()
        device = self._device()
        shape = (self.batch_size, *self.source.input_shape)
        obs = torch.as_tensor(self._obs[index], device=device).view(shape)
        nxt = torch.as_tensor(self._next[index], device=device).view(shape)
        assert self._host is not None
        with torch.no_grad():
            best = functional_call(self._host, self._target, (nxt,)).max(dim=1).values
        done = torch.as_tensor(self._done[index], device=device)
        reward = torch.as_tensor(self._rew[index], device=device)
        target = reward + self.source.gamma * (1.0 - done) * best
        action = torch.as_tensor(self._act[index], device=device, dtype=target.dtype)
        return obs, torch.stack([action, target, done], dim=1)

    def score(self) -> float:
        """The online score: mean normalised return of the last finished episodes (of the
        running one before any has finished)."""
        returns = self._returns or [self._episode_return]
        return sum(self.source.normalise(r) for r in returns) / len(returns)

    def next_batch(self) -> Batch:
        """Act ``env_steps`` steps (more until the buffer holds a minibatch), then sample."""
        phase = self.schedule.phase(self._step)
        distribution = phase.incoming if phase.weight > 0.5 else phase.current
        for _ in range(self.source.env_steps):
            self._act_in_env(distribution)
        while self._size < self.batch_size:
            self._act_in_env(distribution)
        x, y = self._minibatch(self._gen)
        novelty = math.exp(-self._exposure.get(distribution, 0.0) / (self.schedule.task_length / 4))
        self._exposure[distribution] = self._exposure.get(distribution, 0.0) + 1.0
        step, self._step = self._step, self._step + 1
        if self._step % self.source.target_period == 0:
            self._copy_target()
        fraction = phase.weight if distribution == phase.incoming != phase.current else 0.0
        return Batch(x, y, step, phase.task_index, distribution, self.drift_name, novelty,
                     fraction, score=self.score())  # fmt: skip

    def peek(self, n: int) -> list[Batch]:
        """``n`` minibatches from the replay as it is, without acting or consuming anything:
        the no-surgery control of the spike term."""
        gen = torch.Generator()
        gen.set_state(self._gen.get_state())
        phase = self.schedule.phase(self._step)
        out = []
        for k in range(n):
            x, y = self._minibatch(gen)
            out.append(Batch(x, y, self._step + k, phase.task_index, phase.current,
                             self.drift_name, 0.0, 0.0, score=self.score()))  # fmt: skip
        return out

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue exactly: replay, environment (mid-episode), drifts,
        exploration and sampling generators, target network, returns, counters."""
        n = self._size
        return {
            "seed": self.seed,
            "replay": {k: torch.from_numpy(v[:n].copy()) for k, v in self._arrays().items()},
            "pos": self._pos, "size": n, "step": self._step, "env_steps": self._env_steps,
            "returns": list(self._returns), "episode_return": self._episode_return,
            "exposure": {int(k): float(v) for k, v in self._exposure.items()},
            "current": torch.from_numpy(np.asarray(self._current, np.float32).copy()),
            "rng": json.dumps(self._rng.bit_generator.state), "generator": self._gen.get_state(),
            "target": {k: v.clone() for k, v in self._target.items()},
            "env": save_env_state(self.env), "drifts": self.env.state_dict(),
        }  # fmt: skip

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"obs": self._obs, "next": self._next, "act": self._act, "rew": self._rew,
                "done": self._done}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a stream built the same way."""
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved from a stream with seed {state['seed']}, "
                             f"this one has {self.seed}")  # fmt: skip
        n = int(state["size"])
        for key, array in self._arrays().items():
            array[:n] = state["replay"][key].numpy()
        self._pos, self._size, self._step = int(state["pos"]), n, int(state["step"])
        self._env_steps, self._returns = int(state["env_steps"]), list(state["returns"])
        self._episode_return = float(state["episode_return"])
        self._exposure = {int(k): float(v) for k, v in state["exposure"].items()}
        self._current = state["current"].numpy().copy()
        self._rng.bit_generator.state = json.loads(state["rng"])
        self._gen.set_state(state["generator"])
        self._target = {k: v.clone() for k, v in state["target"].items()}
        self.env.load_state_dict(state["drifts"])
        load_env_state(self.env, state["env"])
