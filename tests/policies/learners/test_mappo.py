"""MAPPO: GAE, value normalisation, and learning toy problems whose best action is known."""

from __future__ import annotations

import pytest
import torch

from esper.policies.emrakul import ActionCodec, SpecialistActor, SurgeonGeneral, allocate_counts
from esper.policies.learners import MAPPOLearner, RunningMeanStd, gae

_FISHER, _RANDOM = 2, 2


def test_gae_matches_hand_computation() -> None:
    rewards = torch.tensor([1.0, 2.0, 3.0])
    values = torch.tensor([[0.5], [1.0], [0.0]])
    dones = torch.tensor([0.0, 1.0, 0.0])
    adv, ret = gae(rewards, values, dones, torch.tensor([4.0]), gamma=0.9, lam=0.5)
    d2 = 3.0 + 0.9 * 4.0 - 0.0
    d1 = 2.0 - 1.0  # the episode ended after step 1: no bootstrap
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    assert adv[:, 0].tolist() == pytest.approx([d0 + 0.45 * d1, d1, d2])
    assert torch.allclose(ret, adv + values)


def test_running_mean_std_matches_batch_statistics() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3 + 2
    stats = RunningMeanStd(epsilon=0.0)
    for chunk in x.split(100):
        stats.update(chunk)
    assert stats.mean == pytest.approx(float(x.mean()), abs=1e-6)
    assert stats.std == pytest.approx(float(x.std(unbiased=False)), rel=1e-6)
    assert torch.allclose(stats.denormalize(stats.normalize(x)), x, atol=1e-5)


def _specialist_reward(codec: ActionCodec, raw: torch.Tensor) -> float:
    """Best: turnover 0.3, prune by Fisher, regrow at random, no heat burst."""
    total = 0.0
    for row in raw:
        a = codec.decode(row)
        total += 1.0 - 4.0 * abs(a.turnover - 0.3) + a.prune_mix[_FISHER] + a.regrow_mix[_RANDOM]
        total -= 0.5 * float(a.heat)
    return total / raw.shape[0]


def _greedy_score(actor: SpecialistActor, codec: ActionCodec, obs: torch.Tensor) -> float:
    with torch.no_grad():
        return _specialist_reward(codec, actor.distribution(obs, torch.arange(3)).mode())


def test_mappo_learns_the_best_specialist_action() -> None:
    torch.manual_seed(0)
    codec = ActionCodec(max_turnover=0.5)
    actor = SpecialistActor(obs_dim=4, max_layers=3, hidden=32)
    learner = MAPPOLearner(actor, state_dim=4, max_agents=3, lr=3e-3, critic_lr=3e-3, seed=0)
    gen = torch.Generator().manual_seed(1)
    ids = torch.arange(3)
    obs = torch.randn(3, 4, generator=gen)
    before = _greedy_score(actor, codec, obs)
    for _ in range(40):
        for _ in range(32):  # one-step episodes (a contextual bandit per agent)
            with torch.no_grad():
                dist = actor.distribution(obs, ids)
                raw = dist.sample(gen)
                log_prob = dist.log_prob(raw)
            reward = _specialist_reward(codec, raw)
            learner.store(obs, ids, obs.mean(0), raw, log_prob, reward, done=True)
            learner.finish_path(None, ids)
        metrics = learner.update()
    after = _greedy_score(actor, codec, obs)
    assert set(metrics) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
    # Optimum 3.0; the untrained actor scores ≈ 0.73, the trained one ≈ 2.97 (seeds 0-3).
    assert before < 1.0 and after > 2.5, (before, after)
    greedy = codec.decode(actor.distribution(obs, ids).mode()[0].detach())
    assert abs(greedy.turnover - 0.3) < 0.08
    assert max(range(5), key=lambda i: greedy.prune_mix[i]) == _FISHER
    assert max(range(3), key=lambda i: greedy.regrow_mix[i]) == _RANDOM


def test_mappo_trains_the_general_to_the_best_allocation() -> None:
    """Reward = share of the budget given to layer 0; the best allocation saturates it."""
    torch.manual_seed(0)
    sizes = [100, 300, 600]
    general = SurgeonGeneral(state_dim=3, max_layers=3, hidden=32)
    learner = MAPPOLearner(general, state_dim=3, max_agents=1, lr=1e-2, critic_lr=1e-2, seed=0)
    state = torch.tensor([0.1, 0.2, 0.3])
    ids = torch.zeros(1, dtype=torch.long)
    gen = torch.Generator().manual_seed(2)

    def reward(action: torch.Tensor) -> float:
        counts = allocate_counts(action[:3], sizes, 0.1)
        assert sum(counts) == 100
        return counts[0] / 100

    with torch.no_grad():
        before = reward(general.distribution(state[None]).mode()[0])
    for _ in range(25):
        for _ in range(16):
            with torch.no_grad():
                dist = general.distribution(state[None])
                action = dist.sample(gen)
                log_prob = dist.log_prob(action)
            learner.store(state[None], ids, state, action, log_prob, reward(action[0]), True)
            learner.finish_path(None, ids)
        learner.update()
    with torch.no_grad():
        after = reward(general.distribution(state[None]).mode()[0])
    assert before == pytest.approx(0.1, abs=0.02)
    assert after > 0.9, after  # ≈ 0.1 before training, 1.0 (layer 0 dense) after


def test_learner_checkpoint_round_trip() -> None:
    actor = SpecialistActor(obs_dim=4, max_layers=2, hidden=8)
    learner = MAPPOLearner(actor, state_dim=4, max_agents=2, seed=0)
    obs, ids = torch.randn(2, 4), torch.arange(2)
    dist = actor.distribution(obs, ids)
    raw = dist.sample()
    learner.store(obs, ids, obs[0], raw, dist.log_prob(raw).detach(), 1.0, False)
    learner.finish_path(obs[1], ids)
    learner.update()
    other = MAPPOLearner(SpecialistActor(obs_dim=4, max_layers=2, hidden=8), 4, 2, seed=5)
    other.load_state_dict(learner.state_dict())
    assert torch.equal(other.values(obs[0], ids), learner.values(obs[0], ids))
    assert other.updates == 1
    with pytest.raises(ValueError, match="clip"):
        MAPPOLearner(actor, 4, 2, clip=0.0)


def test_mappo_learns_from_a_delayed_episode_reward() -> None:
    """Four-step episodes, reward only at the end: ``−10 |mean turnover − 0.3|`` (GAE's job)."""
    torch.manual_seed(0)
    codec = ActionCodec(max_turnover=0.5)
    actor = SpecialistActor(obs_dim=3, max_layers=2, hidden=32)
    learner = MAPPOLearner(actor, state_dim=3, max_agents=2, lr=3e-3, critic_lr=3e-3, seed=0)
    gen = torch.Generator().manual_seed(7)
    ids = torch.arange(2)

    def observe(t: int) -> torch.Tensor:
        return torch.tensor([[t / 4, 1.0, 0.0], [t / 4, 0.0, 1.0]])

    def greedy() -> list[float]:
        raw = actor.distribution(observe(0), ids).mode().detach()
        return [codec.decode(r).turnover for r in raw]

    assert all(abs(x - 0.1) < 0.01 for x in greedy())
    for _ in range(30):
        for _ in range(8):
            total = 0.0
            for t in range(4):
                obs = observe(t)
                with torch.no_grad():
                    dist = actor.distribution(obs, ids)
                    raw = dist.sample(gen)
                    log_prob = dist.log_prob(raw)
                total += sum(codec.decode(r).turnover for r in raw) / 2
                reward = 0.0 if t < 3 else -10.0 * abs(total / 4 - 0.3)
                state = torch.tensor([t / 4, 0.0, 0.0])
                learner.store(obs, ids, state, raw, log_prob, reward, done=t == 3)
            learner.finish_path(None, ids)
        learner.update()
    assert all(abs(x - 0.3) < 0.08 for x in greedy()), greedy()


def test_a_loaded_state_keeps_this_learners_learning_rates() -> None:
    """Adam's state carries its parameter groups' lr; after a PBT exploit the member must run
    its explored rates, not its source's."""
    source = MAPPOLearner(SpecialistActor(5, 4, hidden=16), 3, 4, lr=1e-3, critic_lr=2e-3)
    explored = MAPPOLearner(SpecialistActor(5, 4, hidden=16), 3, 4, lr=7e-3, critic_lr=9e-3)
    explored.load_state_dict(source.state_dict())
    assert [g["lr"] for g in explored.actor_optimizer.param_groups] == [7e-3]
    assert [g["lr"] for g in explored.critic_optimizer.param_groups] == [9e-3]
