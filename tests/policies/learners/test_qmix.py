"""QMIX (Rashid et al. 2018): mixer monotonicity and padding, schedules, targets, checkpoints,
and learning on a one-step coordination game and a two-step game with 2 or 3 agents."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
import torch

from esper.policies.learners.qmix import QMIXLearner
from esper.policies.learners.qmix_networks import MonotonicMixer


def _fill(learner: QMIXLearner, n_steps: int, n_agents: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(n_agents)
    for _ in range(n_steps):
        obs = torch.randn(n_agents, learner.obs_dim, generator=g)
        state = torch.randn(learner.state_dim, generator=g)
        actions = learner.act(obs, ids)
        reward = float(torch.randn(1, generator=g))
        learner.store(obs, ids, state, actions, reward, obs + 0.1, state + 0.1, False)


def test_mixer_is_monotone_and_ignores_padded_agents() -> None:
    torch.manual_seed(0)
    mixer = MonotonicMixer(max_agents=5, state_dim=7, embed=8, hypernet_hidden=16)
    states = torch.randn(256, 7)
    mask = torch.arange(5) < torch.randint(1, 6, (256, 1))
    qs = (10 * torch.randn(256, 5)).requires_grad_(True)
    (grad,) = torch.autograd.grad(mixer(qs, states, mask).sum(), qs)
    assert (grad >= 0).all()
    assert (grad[~mask] == 0).all()
    assert (grad[mask] > 0).float().mean() > 0.5  # monotone, not trivially constant
    junk = torch.where(mask, qs.detach(), torch.full_like(qs, float("nan")))
    junk2 = torch.where(mask, qs.detach(), 1e6 * torch.randn(256, 5))
    with torch.no_grad():
        reference = mixer(qs, states, mask)
        assert torch.equal(mixer(junk, states, mask), reference)
        assert torch.equal(mixer(junk2, states, mask), reference)


def test_optimizer_covers_agent_and_mixer_and_both_change() -> None:
    learner = QMIXLearner(3, 4, 2, 3, batch_size=8, buffer_size=64)
    in_optimizer = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    own = [*learner.agent.parameters(), *learner.mixer.parameters()]
    assert {id(p) for p in own} == in_optimizer
    targets = [*learner.target_agent.parameters(), *learner.target_mixer.parameters()]
    assert not in_optimizer & {id(p) for p in targets}
    before = [p.detach().clone() for p in learner.mixer.parameters()]
    agent_before = [p.detach().clone() for p in learner.agent.parameters()]
    _fill(learner, 8, 3)
    stats = learner.update()
    assert {"loss", "q_taken", "q_tot", "target", "grad_norm", "epsilon"} <= set(stats)
    for old, new in zip(before, learner.mixer.parameters(), strict=True):
        assert not torch.equal(old, new)
    assert any(
        not torch.equal(o, n) for o, n in zip(agent_before, learner.agent.parameters(), strict=True)
    )


def test_update_waits_for_a_full_batch() -> None:
    learner = QMIXLearner(2, 2, 2, 2, batch_size=4, buffer_size=16)
    _fill(learner, 3, 2)
    assert learner.update() == {}
    _fill(learner, 1, 2)
    assert learner.update()


def test_epsilon_schedule_is_linear_in_environment_steps() -> None:
    learner = QMIXLearner(2, 2, 2, 2, epsilon_anneal=100, epsilon_start=1.0, epsilon_end=0.05)
    assert learner.epsilon == 1.0
    _fill(learner, 50, 2)
    assert learner.epsilon == pytest.approx(0.525)
    _fill(learner, 50, 2)
    assert learner.epsilon == pytest.approx(0.05)
    _fill(learner, 30, 2)
    assert learner.epsilon == pytest.approx(0.05)
    greedy = QMIXLearner(2, 2, 2, 2, epsilon_start=0.0, epsilon_end=0.0)
    obs, ids = torch.randn(2, 2), torch.arange(2)
    for _ in range(5):
        assert torch.equal(greedy.act(obs, ids), greedy.q_values(obs, ids).argmax(-1))


def test_target_networks_are_hard_copied_every_target_update() -> None:
    learner = QMIXLearner(3, 3, 2, 2, target_update=3, batch_size=4, buffer_size=32)
    _fill(learner, 8, 2)
    initial = [p.clone() for p in learner.target_mixer.parameters()]
    for _ in range(2):
        learner.update()
        for old, new in zip(initial, learner.target_mixer.parameters(), strict=True):
            assert torch.equal(old, new)
    learner.update()
    online = [*learner.agent.parameters(), *learner.mixer.parameters()]
    target = [*learner.target_agent.parameters(), *learner.target_mixer.parameters()]
    for o, t in zip(online, target, strict=True):
        assert torch.equal(o, t)
    learner.update()
    assert not torch.equal(
        next(learner.agent.parameters()), next(learner.target_agent.parameters())
    )


@pytest.mark.parametrize("double_q", [True, False])
def test_td_target_uses_online_argmax_and_target_values(double_q: bool) -> None:
    learner = QMIXLearner(
        2, 2, 3, 2, gamma=0.5, double_q=double_q, standardise_rewards=False, seed=3
    )
    with torch.no_grad():  # make the online and target agents disagree about the argmax
        for p in learner.target_agent.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = {
        "next_obs": torch.tensor([[[1.0, -1.0], [0.5, 2.0]], [[0.3, 0.3], [0.0, 0.0]]]),
        "next_state": torch.tensor([[0.2, -0.4], [1.0, 1.0]]),
        "mask": torch.tensor([[True, True], [True, False]]),
        "reward": torch.tensor([1.0, -2.0]),
        "done": torch.tensor([0.0, 1.0]),
    }
    ids = torch.arange(2).expand(2, 2)
    with torch.no_grad():
        online = learner.agent(batch["next_obs"], ids)
        target = learner.target_agent(batch["next_obs"], ids)
        choice = (online if double_q else target).argmax(-1)
        values = target.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
        mixed = learner.target_mixer(values, batch["next_state"], batch["mask"])
    expected = torch.stack([1.0 + 0.5 * mixed[0], torch.tensor(-2.0)])
    assert torch.allclose(learner.td_target(batch), expected)
    if double_q:
        assert not torch.equal(online.argmax(-1)[0], target.argmax(-1)[0])


def test_rewards_are_standardised_with_running_statistics() -> None:
    learner = QMIXLearner(2, 2, 2, 2, batch_size=2, buffer_size=8)
    rewards = [1.0, 5.0, -3.0, 2.5]
    ids = torch.arange(2)
    for r in rewards:
        obs, state = torch.zeros(2, 2), torch.zeros(2)
        learner.store(obs, ids, state, torch.zeros(2), r, obs, state, True)
    batch = {k: v[:4] for k, v in learner.buffer.data.items()}
    stream = torch.tensor(rewards)
    expected = (stream - stream.mean()) / stream.std(unbiased=False)
    assert torch.allclose(learner.td_target(batch), expected, atol=1e-5)


def test_inputs_are_validated() -> None:
    learner = QMIXLearner(2, 3, 2, 3)
    with pytest.raises(ValueError, match="max_agents=3"):
        learner.act(torch.zeros(4, 2), torch.arange(4))
    with pytest.raises(ValueError, match="distinct"):
        learner.act(torch.zeros(2, 2), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        learner.act(torch.zeros(2, 5), torch.arange(2))
    with pytest.raises(ValueError, match="state has shape"):
        learner.store(
            torch.zeros(2, 2),
            torch.arange(2),
            torch.zeros(4),
            torch.zeros(2),
            0.0,
            torch.zeros(2, 2),
            torch.zeros(3),
            False,
        )
    with pytest.raises(ValueError, match="batch_size"):
        QMIXLearner(2, 3, 2, 3, batch_size=64, buffer_size=32)
    with pytest.raises(ValueError, match="max_agents must be a positive integer"):
        QMIXLearner(2, 3, 2, 0)


def test_state_dict_round_trip_continues_bit_identically() -> None:
    kwargs: dict[str, Any] = dict(
        batch_size=8, buffer_size=64, target_update=5, epsilon_anneal=50, seed=11
    )
    learner = QMIXLearner(3, 4, 3, 3, **kwargs)
    _fill(learner, 20, 2, seed=1)
    for _ in range(7):
        learner.update()
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)  # checkpoints survive torch.load(weights_only=True)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    def _continue(agent: QMIXLearner) -> list[object]:
        _fill(agent, 15, 3, seed=2)
        trace: list[object] = [agent.update() for _ in range(6)]
        trace.append(agent.act(torch.ones(3, 3), torch.arange(3)))
        trace.extend(p.detach().clone() for p in agent.mixer.parameters())
        return trace

    expected = _continue(learner)
    fresh = QMIXLearner(3, 4, 3, 3, **kwargs)
    fresh.load_state_dict(saved)
    got = _continue(fresh)
    for a, b in zip(expected, got, strict=True):
        if isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor) and torch.equal(a, b)
        else:
            assert a == b
    with pytest.raises(ValueError, match="does not match"):
        QMIXLearner(3, 4, 3, 3, seed=12).load_state_dict(saved)


def _coordination_payoff(actions: torch.Tensor) -> float:
    """Three agents, three actions: 8 if all choose action 2, otherwise the number who did."""
    twos = int((actions == 2).sum())
    return 8.0 if twos == actions.numel() else float(twos)


def test_learns_the_optimal_joint_action_of_a_nonlinear_matrix_game() -> None:
    # Monotonic in each agent's action but far from additive: the best additive (VDN-style)
    # fit under uniform play values the optimum at ~4.3, so it cannot express the jump to 8.
    n = 3
    joint = torch.tensor(list(itertools.product(range(3), repeat=n)))
    payoff = torch.tensor([_coordination_payoff(u) for u in joint])
    design = torch.cat(
        [torch.ones(len(joint), 1), torch.nn.functional.one_hot(joint, 3).flatten(1)], 1
    )
    additive = design @ torch.linalg.lstsq(design, payoff.unsqueeze(1), driver="gelsd").solution
    assert float(additive[-1]) < 5.0

    learner = QMIXLearner(
        1,
        1,
        3,
        n,
        hidden=32,
        lr=3e-3,
        gamma=0.0,
        target_update=50,
        epsilon_anneal=200,
        batch_size=32,
        buffer_size=400,
        standardise_rewards=False,
        seed=0,
    )
    obs, ids, state = torch.ones(n, 1), torch.arange(n), torch.ones(1)
    initial = _coordination_payoff(learner.act(obs, ids, explore=False))
    for _ in range(400):
        actions = learner.act(obs, ids)
        learner.store(obs, ids, state, actions, _coordination_payoff(actions), obs, state, True)
        learner.update()
    greedy = learner.act(obs, ids, explore=False)
    assert greedy.tolist() == [2, 2, 2]
    assert _coordination_payoff(greedy) - initial >= 6.0
    with torch.no_grad():
        q = learner.q_values(obs, ids).gather(1, greedy[:, None]).T
        q_tot = float(learner.mixer(q, state[None], torch.ones(1, n, dtype=torch.bool)))
    assert abs(q_tot - 8.0) < 1.0


def _two_step_obs(stage: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    feature = torch.zeros(4)
    feature[stage] = 1.0
    feature[3] = n / 3
    return feature.expand(n, 4).clone(), feature.clone()


def _two_step_episode(learner: QMIXLearner, n: int, train: bool) -> float:
    """The QMIX paper's two-step game (Section 6.1, Table 1) for ``n`` agents.

    Agent 0's first action picks state 2A (reward 7 whatever is played) or 2B (reward 8 if every
    agent plays action 1, otherwise the number who did). An additive factorisation prefers 2A.
    """
    ids = torch.arange(n)
    obs, state = _two_step_obs(0, n)
    first = learner.act(obs, ids, explore=train)
    stage = 1 if int(first[0]) == 0 else 2
    next_obs, next_state = _two_step_obs(stage, n)
    second = learner.act(next_obs, ids, explore=train)
    ones = int((second == 1).sum())
    reward = 7.0 if stage == 1 else (8.0 if ones == n else float(ones))
    if train:
        learner.store(obs, ids, state, first, 0.0, next_obs, next_state, False)
        learner.update()
        learner.store(next_obs, ids, next_state, second, reward, next_obs, next_state, True)
        learner.update()
    return reward


def test_learns_a_two_step_game_with_two_or_three_agents() -> None:
    learner = QMIXLearner(
        4,
        4,
        2,
        3,
        hidden=32,
        lr=3e-3,
        target_update=50,
        epsilon_anneal=300,
        batch_size=32,
        buffer_size=1000,
        seed=1,
    )
    initial = [_two_step_episode(learner, n, train=False) for n in (2, 3)]
    counts = torch.Generator().manual_seed(0)
    for _ in range(300):
        _two_step_episode(learner, 2 + int(torch.randint(2, (1,), generator=counts)), train=True)
    assert initial == [7.0, 7.0]
    assert [_two_step_episode(learner, n, train=False) for n in (2, 3)] == [8.0, 8.0]


def test_buffer_places_agents_in_their_identity_slots() -> None:
    learner = QMIXLearner(2, 1, 3, 4)
    obs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ids, actions = torch.tensor([2, 0]), torch.tensor([1, 2])
    learner.store(obs, ids, torch.zeros(1), actions, 1.0, -obs, torch.ones(1), False)
    data = learner.buffer.data
    assert data["mask"][0].tolist() == [True, False, True, False]
    assert torch.equal(data["obs"][0, [2, 0]], obs)
    assert torch.equal(data["next_obs"][0, [2, 0]], -obs)
    assert data["actions"][0, [2, 0]].tolist() == [1, 2]
    assert (data["obs"][0, [1, 3]] == 0).all()


def test_state_dict_before_any_update_loads() -> None:
    learner = QMIXLearner(2, 2, 2, 2, seed=5)
    fresh = QMIXLearner(2, 2, 2, 2, seed=5)
    fresh.load_state_dict(learner.state_dict())
    obs, ids = torch.randn(2, 2), torch.arange(2)
    assert torch.equal(fresh.act(obs, ids), learner.act(obs, ids))


def test_a_loaded_state_keeps_this_learners_hyperparameters() -> None:
    """A PBT exploit loads another member's state into a learner built with explored values:
    the shapes and seed must match, the lr, γ and ε schedule stay the learner's own."""
    sizes: dict[str, Any] = dict(batch_size=8, buffer_size=64, seed=11)
    source = QMIXLearner(3, 4, 3, 3, lr=1e-3, gamma=0.99, epsilon_end=0.05, **sizes)
    _fill(source, 20, 2)
    source.update()
    explored = QMIXLearner(3, 4, 3, 3, lr=4e-3, gamma=0.9, epsilon_end=0.2, **sizes)
    explored.load_state_dict(source.state_dict())
    assert [g["lr"] for g in explored.optimizer.param_groups] == [4e-3]
    assert (explored.gamma, explored.epsilon_end) == (0.9, 0.2)
    assert explored.updates == source.updates
