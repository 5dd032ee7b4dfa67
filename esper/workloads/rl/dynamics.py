"""Non-stationary dynamics for agents: the ways an environment can change along a stream.

The reinforcement-learning analogue of :mod:`esper.workloads.drift`. A dynamics drift turns a
distribution index ``d`` (which task of the stream the agent is in) into a change of the
environment: its physics (gravity, pole or link length, masses, push force), what its actions
do (a permutation of the discrete actions, random actions with some probability), what it
reports (a permutation of the observation, Gaussian noise) or what it pays (a scaled or
negated reward). :class:`DriftingEnv` applies a list of them to a gymnasium environment, and
:meth:`DriftingEnv.set_task` moves it to another distribution; a schedule
(:mod:`esper.workloads.schedules`) decides which distribution is active when.

As for the classification drifts, everything a drift draws for distribution ``d`` comes from
a generator seeded by ``(seed, drift name, position, d)`` only, so the same ``d`` always means
the same environment (a recurring schedule A→B→A returns to A), and distribution 0 is the
environment as published. Changing physics mid-stream follows the non-stationary
classic-control settings of the plasticity literature (Nikishin et al., ICML 2022, "The
primacy bias in deep reinforcement learning"; Dohare et al., Nature 2024, on changing
friction), and permuted observations the "permuted" continual-RL variants.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Sequence
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np

from esper.registry import Registry
from esper.seeding import derive_seed

__all__ = [
    "ENV_DRIFTS",
    "PHYSICS",
    "ActionNoise",
    "DriftingEnv",
    "EnvDrift",
    "ObservationNoise",
    "PermuteActions",
    "PermuteObservations",
    "PhysicsScale",
    "RewardScale",
]

PHYSICS: dict[str, dict[str, tuple[str, ...]]] = {
    "CartPoleEnv": {
        "gravity": ("gravity",),
        "length": ("length",),
        "mass": ("masspole", "masscart"),
        "force": ("force_mag",),
    },
    "AcrobotEnv": {
        "length": ("LINK_LENGTH_1", "LINK_LENGTH_2"),
        "mass": ("LINK_MASS_1", "LINK_MASS_2"),
    },
    "MountainCarEnv": {"gravity": ("gravity",), "force": ("force",)},
}
"""The physical quantities each classic-control environment exposes, by the attribute names
of its gymnasium implementation; a physics drift scales every attribute of its quantity."""


def _refresh_derived(env: Any) -> None:
    """CartPole caches sums of its parameters; recompute them after a change."""
    if type(env).__name__ == "CartPoleEnv":
        env.total_mass = env.masspole + env.masscart
        env.polemass_length = env.masspole * env.length


class EnvDrift(ABC):
    """One dynamics drift; subclasses override the hooks they need.

    :meth:`bind` attaches it to an environment (checking that it applies), :meth:`set_task`
    moves it to a distribution; :meth:`action`, :meth:`observation` and :meth:`reward` then
    transform what passes between the agent and the environment.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._env: gym.Env[Any, Any] | None = None
        self._seed = 0
        self._slot = 0
        self.task = 0

    def bind(self, env: gym.Env[Any, Any], seed: int, slot: int = 0) -> None:
        """Attach to ``env`` (the wrapped environment); ``slot`` is the drift's position."""
        self._env, self._seed, self._slot = env, seed, slot
        self.set_task(0)

    @property
    def env(self) -> gym.Env[Any, Any]:
        if self._env is None:
            raise RuntimeError(f"dynamics drift {self.name!r} is not bound; call bind() first")
        return self._env

    def rng(self, distribution: int, *more: object) -> np.random.Generator:
        """The generator of ``distribution`` (and of ``more``, e.g. a step counter)."""
        return np.random.default_rng(
            derive_seed(self._seed, "env-drift", self.name, self._slot, distribution, *more)
        )

    def set_task(self, distribution: int) -> None:
        """Move to ``distribution``."""
        self.task = distribution

    def action(self, action: Any) -> Any:
        """The action the environment receives for the agent's ``action``."""
        return action

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """What the agent sees of the environment's ``observation``."""
        return observation

    def reward(self, reward: float) -> float:
        """What the agent is paid for the environment's ``reward``."""
        return reward

    def state_dict(self) -> dict[str, Any]:
        """The distribution, and the drift's own random state if it has one."""
        return {"task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the distribution; subclasses add their random state)."""
        self.set_task(int(state.get("task", self.task)))


ENV_DRIFTS: Registry[type[EnvDrift]] = Registry("dynamics drift")


@ENV_DRIFTS.register("physics")
class PhysicsScale(EnvDrift):
    """Scale one physical quantity of a classic-control environment per distribution.

    Distribution ``d ≥ 1`` multiplies every attribute of ``quantity`` (see :data:`PHYSICS`) by a
    factor drawn log-uniformly from ``[low, high]``; distribution 0 restores the published
    values.

    Args:
        quantity: ``gravity``, ``length``, ``mass`` or ``force`` (what the environment has).
        low: Smallest factor (``> 0``).
        high: Largest factor (``≥ low``).
    """

    name = "physics"

    def __init__(self, quantity: str = "gravity", low: float = 0.5, high: float = 2.0) -> None:
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"physics factors need 0 < low ≤ high, got low={low}, high={high}")
        self.quantity, self.low, self.high = quantity, low, high
        self._base: dict[str, float] = {}

    def bind(self, env: gym.Env[Any, Any], seed: int, slot: int = 0) -> None:
        kind = type(env.unwrapped).__name__
        quantities = PHYSICS.get(kind)
        if quantities is None:
            raise ValueError(
                f"dynamics drift 'physics' knows no physics of {kind}; it applies to "
                f"{', '.join(sorted(PHYSICS))}"
            )
        if self.quantity not in quantities:
            raise ValueError(
                f"{kind} has no physical quantity {self.quantity!r}; valid: "
                f"{', '.join(sorted(quantities))}"
            )
        self._base = {a: float(getattr(env.unwrapped, a)) for a in quantities[self.quantity]}
        super().bind(env, seed, slot)

    def factor(self, distribution: int) -> float:
        """The scale of distribution ``distribution`` (1 for distribution 0)."""
        if distribution == 0:
            return 1.0
        u = float(self.rng(distribution).uniform())
        return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))

    def set_task(self, distribution: int) -> None:
        super().set_task(distribution)
        factor = self.factor(distribution)
        for attribute, base in self._base.items():
            setattr(self.env.unwrapped, attribute, base * factor)
        _refresh_derived(self.env.unwrapped)


def _discrete_actions(env: gym.Env[Any, Any], drift: str) -> int:
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"dynamics drift {drift!r} needs discrete actions, not {env.action_space}")
    return int(env.action_space.n)


class _Permutation(EnvDrift):
    """A permutation of ``size(env)`` things per distribution (identity at 0)."""

    def size(self, env: gym.Env[Any, Any]) -> int:
        raise NotImplementedError

    def bind(self, env: gym.Env[Any, Any], seed: int, slot: int = 0) -> None:
        self._n = self.size(env)
        super().bind(env, seed, slot)

    def permutation(self, distribution: int) -> np.ndarray:
        """The permutation of distribution ``distribution``."""
        if distribution == 0:
            return np.arange(self._n)
        return self.rng(distribution).permutation(self._n)

    def set_task(self, distribution: int) -> None:
        super().set_task(distribution)
        self._perm = self.permutation(distribution)


@ENV_DRIFTS.register("permute_actions")
class PermuteActions(_Permutation):
    """What each discrete action does is permuted per distribution (identity at 0): action
    ``a`` of the agent is action ``permutation[a]`` of the environment."""

    name = "permute_actions"

    def size(self, env: gym.Env[Any, Any]) -> int:
        return _discrete_actions(env, self.name)

    def action(self, action: Any) -> Any:
        return int(self._perm[int(action)])


class _Stochastic(EnvDrift):
    """A drift with a random stream of its own (restarted per distribution, saved)."""

    def set_task(self, distribution: int) -> None:
        super().set_task(distribution)
        self._rng = self.rng(distribution, "stream")

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_task(int(state["task"]))
        self._rng.bit_generator.state = state["rng"]


@ENV_DRIFTS.register("action_noise")
class ActionNoise(_Stochastic):
    """With probability ``p`` (from distribution 1 on) a uniformly random discrete action
    replaces the agent's (a sticky, slippery controller)."""

    name = "action_noise"

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"action_noise p must be in [0, 1], got {p}")
        self.p = p

    def bind(self, env: gym.Env[Any, Any], seed: int, slot: int = 0) -> None:
        self._n = _discrete_actions(env, self.name)
        super().bind(env, seed, slot)

    def action(self, action: Any) -> Any:
        if self.task == 0 or self._rng.uniform() >= self.p:
            return action
        return int(self._rng.integers(self._n))


def _vector_length(env: gym.Env[Any, Any], drift: str) -> int:
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"dynamics drift {drift!r} needs a vector observation, not {space}")
    return int(space.shape[0])


@ENV_DRIFTS.register("permute_observations")
class PermuteObservations(_Permutation):
    """The observation's entries are permuted per distribution (identity at 0): the agent's
    entry ``i`` is the environment's entry ``permutation[i]``."""

    name = "permute_observations"

    def size(self, env: gym.Env[Any, Any]) -> int:
        return _vector_length(env, self.name)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self._perm]


@ENV_DRIFTS.register("observation_noise")
class ObservationNoise(_Stochastic):
    """Gaussian noise of standard deviation ``std`` on every observation entry, from
    distribution 1 on (a failing sensor)."""

    name = "observation_noise"

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"observation_noise std must be finite and ≥ 0, got {std}")
        self.std = std

    def bind(self, env: gym.Env[Any, Any], seed: int, slot: int = 0) -> None:
        _vector_length(env, self.name)
        super().bind(env, seed, slot)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self.task == 0 or self.std == 0:
            return observation
        noise = self._rng.normal(0.0, self.std, size=observation.shape)
        return (observation + noise).astype(observation.dtype)


@ENV_DRIFTS.register("reward_scale")
class RewardScale(EnvDrift):
    """The reward is multiplied by a factor drawn log-uniformly in ``[low, high]`` from
    distribution 1 on, and negated on odd distributions when ``flip`` is set."""

    name = "reward_scale"

    def __init__(self, low: float = 0.5, high: float = 2.0, flip: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"reward_scale needs 0 < low ≤ high, got low={low}, high={high}")
        self.low, self.high, self.flip = low, high, flip

    def factor(self, distribution: int) -> float:
        """The reward's multiplier in distribution ``distribution`` (1 at 0)."""
        if distribution == 0:
            return 1.0
        u = float(self.rng(distribution).uniform())
        scale = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return -scale if self.flip and distribution % 2 else scale

    def set_task(self, distribution: int) -> None:
        super().set_task(distribution)
        self._factor = self.factor(distribution)

    def reward(self, reward: float) -> float:
        return reward * self._factor


class DriftingEnv(gym.Wrapper[Any, Any, Any, Any]):
    """A gymnasium environment under dynamics drifts, moved between distributions by
    :meth:`set_task`.

    Args:
        env: The environment (its physics are changed in place through ``env.unwrapped``).
        drifts: Applied in order: actions pass through them first to last on the way in,
            observations and rewards on the way out.
        seed: Seeds every drift.
    """

    def __init__(self, env: gym.Env[Any, Any], drifts: Sequence[EnvDrift], seed: int) -> None:
        super().__init__(env)
        self.drifts = list(drifts)
        for slot, drift in enumerate(self.drifts):
            drift.bind(env, seed, slot)
        self.task = 0

    def set_task(self, distribution: int) -> None:
        """Move every drift to ``distribution`` (physics change at once, mid-episode too)."""
        if distribution < 0:
            raise ValueError(f"a distribution index is ≥ 0, got {distribution}")
        self.task = distribution
        for drift in self.drifts:
            drift.set_task(distribution)

    def _observe(self, observation: Any) -> Any:
        for drift in self.drifts:
            observation = drift.observation(observation)
        return observation

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        return self._observe(observation), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        for drift in self.drifts:
            action = drift.action(action)
        observation, reward, terminated, truncated, info = self.env.step(action)
        paid = float(reward)
        for drift in self.drifts:
            paid = drift.reward(paid)
        return self._observe(observation), paid, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """The distribution and every drift's random state (not the episode's state)."""
        return {"task": self.task, "drifts": [d.state_dict() for d in self.drifts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.set_task(int(state["task"]))
        for drift, drift_state in zip(self.drifts, state["drifts"], strict=True):
            drift.load_state_dict(drift_state)
