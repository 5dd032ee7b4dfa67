"""The DQN agent as a stream: TD targets, the online score, the organism on an environment,
and an exact state round trip (same actions and returns after a restore)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from esper.checkpoint import load_checkpoint, save_checkpoint
from esper.conf import ConfigError, compose
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from esper.workloads.rl import AgentStream

_TINY = [
    "workload=cartpole_drifting",
    "workload.host.params.hidden=[32,32]",
    "workload.batch_size=16",
    "workload.schedule.params.task_length=60",
    "workload.dataset.params.exploration_steps=100",
    "workload.dataset.params.target_period=20",
    "policy=rigl",
    "policy.density=0.3",
    "policy.surgery_interval=20",
    "policy.params.delta_t=20",
    "workload.organism.spike_window=2",
]


def test_batches_carry_actions_and_the_td_targets_of_the_target_network() -> None:
    organism = build_organism(compose(_TINY))
    stream = organism.stream
    assert isinstance(stream, AgentStream)
    batch = stream.next_batch()
    assert batch.x.shape == (16, 4) and batch.y.shape == (16, 3)
    actions = batch.y[:, 0]
    assert set(actions.tolist()) <= {0.0, 1.0}
    # the next minibatch, its targets recomputed by hand from the buffer
    gen = torch.Generator()
    gen.set_state(stream._gen.get_state())  # the draw the stream is about to make
    index = torch.randint(stream._size, (16,), generator=gen).numpy()
    x, y = stream._minibatch(stream._gen)
    nxt = torch.as_tensor(stream._next[index])
    with torch.no_grad():
        best = torch.func.functional_call(organism.host, stream._target, (nxt,)).max(1).values
    done = torch.as_tensor(stream._done[index])
    expected = torch.as_tensor(stream._rew[index]) + 0.99 * (1 - done) * best
    np.testing.assert_allclose(y[:, 1].numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(x.numpy(), stream._obs[index])


def test_the_online_score_is_the_normalised_return_of_recent_episodes() -> None:
    stream = build_organism(compose(_TINY)).stream
    assert isinstance(stream, AgentStream)
    stream._returns = [500.0, 0.0, 250.0]
    assert stream.score() == pytest.approx(0.5)
    assert stream.source.normalise(1e4) == 1.0 and stream.source.normalise(-5.0) == 0.0


def test_an_organism_lives_on_an_environment_and_is_scored_by_its_returns() -> None:
    organism = build_organism(compose(_TINY))
    step = organism.reset()
    for _ in range(3):
        step = organism.step({})
    assert 0.0 <= step.info["online_accuracy"] <= 1.0
    assert np.isfinite(step.info["online_loss"]) and not step.info["diverged"]
    assert organism.scalpel.global_density() == pytest.approx(0.3, abs=0.01)
    assert step.info["sgd_step"] == 80  # K = 20 host updates per surgery, after 20 at reset


def _run(organism: Organism, surgeries: int) -> list[tuple[float, float, list[int]]]:
    out = []
    for _ in range(surgeries):
        step = organism.step({})
        stream = organism.stream
        assert isinstance(stream, AgentStream)
        last = [int(a) for a in stream._act[max(0, stream._pos - 20) : stream._pos]]
        out.append((step.info["online_accuracy"], step.info["online_loss"], last))
    return out


_MINATAR = [
    "workload=minatar_breakout_permuted",
    "workload.host.params.hidden=[32]",
    "workload.batch_size=16",
    "workload.schedule.params.task_length=60",
    "workload.dataset.params.exploration_steps=100",
    "workload.dataset.params.target_period=20",
    *_TINY[6:],
]


@pytest.mark.parametrize("overrides", [_TINY, _MINATAR], ids=["cartpole", "minatar"])
def test_state_round_trip_gives_the_same_actions_and_returns(
    overrides: list[str], tmp_path: Path
) -> None:
    cfg = compose(overrides)
    organism = build_organism(cfg)
    organism.reset()
    _run(organism, 3)  # mid-episode, mid-task, replay filling
    save_checkpoint(tmp_path / "o.pt", "organism", organism.state_dict())
    expected = _run(organism, 3)
    restored = build_organism(cfg)
    restored.load_state_dict(load_checkpoint(tmp_path / "o.pt", "organism"))
    assert _run(restored, 3) == expected
    assert restored.stream._returns == organism.stream._returns  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("workload.drifts=[{name: rotate}]", "unknown dynamics drift 'rotate'"),
        ("workload.dataset.params.gamma=1.5", "gamma must lie in"),
        ("workload.drifts=[{name: physics, params: {quantity: friction}}]", "friction"),
    ],
)
def test_bad_agent_settings_are_refused_by_name(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_organism(compose([*_TINY, override]))
