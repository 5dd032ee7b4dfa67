"""Dynamics drifts change the environment as they claim: each is checked by a property of the
environment measured before and after (an acceleration, what an action does, what the agent
sees or is paid), and distribution 0 is always the published environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from esper.workloads.rl.dynamics import ENV_DRIFTS, PHYSICS, DriftingEnv


def _env(name: str, *drifts: Any, seed: int = 0) -> DriftingEnv:
    return DriftingEnv(gym.make(name), list(drifts), seed=seed)


def _pole_acceleration(env: DriftingEnv) -> float:
    """Change of CartPole's pole angular velocity in one step from a fixed tilted state."""
    env.reset(seed=0)
    env.unwrapped.state = np.array([0.0, 0.0, 0.1, 0.0])
    observation, *_ = env.step(1)
    return float(observation[3])


def test_gravity_scales_the_pole_acceleration_and_distribution_0_restores_it() -> None:
    env = _env("CartPole-v1", ENV_DRIFTS["physics"](quantity="gravity", low=2.0, high=2.0))
    published = _pole_acceleration(env)
    env.set_task(1)
    assert env.unwrapped.gravity == pytest.approx(2 * 9.8)
    heavier = _pole_acceleration(env)
    assert heavier > published  # the tilted pole falls faster against the same push
    env.set_task(0)
    assert env.unwrapped.gravity == 9.8 and _pole_acceleration(env) == published


@pytest.mark.parametrize(
    ("name", "quantity"),
    [(f"{env}", q) for env, qs in [("CartPole-v1", PHYSICS["CartPoleEnv"]),
                                   ("Acrobot-v1", PHYSICS["AcrobotEnv"]),
                                   ("MountainCar-v0", PHYSICS["MountainCarEnv"])] for q in qs],
)  # fmt: skip
def test_every_physical_quantity_is_scaled_within_its_range(name: str, quantity: str) -> None:
    env = _env(name, ENV_DRIFTS["physics"](quantity=quantity, low=0.5, high=3.0), seed=4)
    kind = type(env.unwrapped).__name__
    attributes = PHYSICS[kind][quantity]
    base = {a: getattr(env.unwrapped, a) for a in attributes}
    env.set_task(3)
    ratios = {getattr(env.unwrapped, a) / base[a] for a in attributes}
    (ratio,) = {round(r, 12) for r in ratios}  # every attribute by the same factor
    assert 0.5 <= ratio <= 3.0 and ratio != 1.0
    if kind == "CartPoleEnv":  # its cached sums follow
        u = env.unwrapped
        assert u.total_mass == u.masspole + u.masscart
        assert u.polemass_length == u.masspole * u.length


def test_a_distribution_means_the_same_environment_every_time() -> None:
    env = _env("CartPole-v1", ENV_DRIFTS["physics"](quantity="length"), seed=9)
    lengths = []
    for d in (1, 2, 1, 0, 2):
        env.set_task(d)
        lengths.append(env.unwrapped.length)
    assert lengths[0] == lengths[2] and lengths[1] == lengths[4] and lengths[3] == 0.5
    assert lengths[0] != lengths[1]


def test_permuted_actions_do_what_the_permutation_says() -> None:
    env = _env("Acrobot-v1", ENV_DRIFTS["permute_actions"](), seed=1)
    env.set_task(1)
    perm = env.drifts[0].permutation(1)
    assert sorted(perm) == [0, 1, 2] and list(perm) != [0, 1, 2]
    plain = gym.make("Acrobot-v1")
    for action in range(3):
        env.reset(seed=5)
        plain.reset(seed=5)
        drifted, *_ = env.step(action)
        expected, *_ = plain.step(int(perm[action]))
        np.testing.assert_array_equal(drifted, expected)


def test_permuted_observations_are_the_published_ones_reordered() -> None:
    env = _env("CartPole-v1", ENV_DRIFTS["permute_observations"](), seed=2)
    plain = gym.make("CartPole-v1")
    env.set_task(1)
    perm = env.drifts[0].permutation(1)
    seen, _ = env.reset(seed=3)
    truth, _ = plain.reset(seed=3)
    np.testing.assert_array_equal(seen, truth[perm])
    assert not np.array_equal(seen, truth)


def test_observation_noise_has_the_configured_spread_and_none_at_distribution_0() -> None:
    env = _env("CartPole-v1", ENV_DRIFTS["observation_noise"](std=0.3), seed=0)
    plain = gym.make("CartPole-v1")
    seen, _ = env.reset(seed=1)
    truth, _ = plain.reset(seed=1)
    np.testing.assert_array_equal(seen, truth)
    env.set_task(1)
    errors = []
    for seed in range(400):
        seen, _ = env.reset(seed=seed)
        truth, _ = plain.reset(seed=seed)
        errors.append(seen - truth)
    assert np.std(np.concatenate(errors)) == pytest.approx(0.3, rel=0.08)


def test_action_noise_replaces_the_agents_action_at_the_configured_rate() -> None:
    env = _env("CartPole-v1", ENV_DRIFTS["action_noise"](p=0.5), seed=0)
    drift = env.drifts[0]
    assert all(drift.action(1) == 1 for _ in range(100))  # distribution 0: untouched
    env.set_task(1)
    changed = np.mean([drift.action(1) != 1 for _ in range(4000)])
    assert changed == pytest.approx(0.5 * 1 / 2, abs=0.03)  # p × (a different one of 2)


@pytest.mark.parametrize("flip", [False, True])
def test_rewards_are_scaled_and_flipped_on_odd_distributions(flip: bool) -> None:
    env = _env("CartPole-v1", ENV_DRIFTS["reward_scale"](low=3.0, high=3.0, flip=flip))
    rewards = []
    for d in (0, 1, 2):
        env.set_task(d)
        env.reset(seed=0)
        rewards.append(env.step(0)[1])
    assert rewards == pytest.approx([1.0, -3.0 if flip else 3.0, 3.0])


def test_noise_streams_continue_exactly_after_a_state_round_trip() -> None:
    drifts = [ENV_DRIFTS["observation_noise"](std=0.1), ENV_DRIFTS["action_noise"](p=0.3)]
    env = _env("CartPole-v1", *drifts, seed=6)
    env.set_task(2)
    env.reset(seed=0)
    state = env.state_dict()
    first = [env.step(a % 2)[0] for a in range(5)]
    other = _env("CartPole-v1", ENV_DRIFTS["observation_noise"](std=0.1),
                 ENV_DRIFTS["action_noise"](p=0.3), seed=6)  # fmt: skip
    other.reset(seed=0)  # the episode's own state comes from its seed, the drifts' from state
    other.load_state_dict(state)
    second = [other.step(a % 2)[0] for a in range(5)]
    np.testing.assert_array_equal(np.stack(first), np.stack(second))


@pytest.mark.parametrize(
    ("name", "drift", "needle"),
    [
        ("CartPole-v1", ENV_DRIFTS["physics"](quantity="friction"), "valid: force, gravity"),
        ("Pendulum-v1", ENV_DRIFTS["physics"](), "applies to AcrobotEnv, CartPoleEnv"),
        ("Pendulum-v1", ENV_DRIFTS["permute_actions"](), "needs discrete actions"),
    ],
)
def test_a_drift_that_does_not_apply_names_why(name: str, drift: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        _env(name, drift)


def test_permuted_actions_change_what_a_minatar_agent_does() -> None:
    from esper.workloads.rl.agent import _make_env

    env = DriftingEnv(_make_env("MinAtar/Breakout-v1"), [ENV_DRIFTS["permute_actions"]()], 3)
    plain = _make_env("MinAtar/Breakout-v1")
    env.set_task(1)
    perm = env.drifts[0].permutation(1)
    n = env.action_space.n  # the minimal action set
    assert sorted(perm) == list(range(n)) and list(perm) != list(range(n))
    for action in range(n):
        env.reset(seed=5)
        plain.reset(seed=5)
        for _ in range(3):
            drifted, *_ = env.step(action)
            expected, *_ = plain.step(int(perm[action]))
        np.testing.assert_array_equal(drifted, expected)
    with pytest.raises(ValueError, match="knows no physics of BaseEnv"):
        DriftingEnv(_make_env("MinAtar/Breakout-v1"), [ENV_DRIFTS["physics"]()], 0)
