"""MAPPO's auxiliary effect prediction: it learns, it shapes the trunk, it is off exactly at
``aux_coef=0``, and it checkpoints (old checkpoints without the head included)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper.checkpoint import load_checkpoint
from esper.policies.checkpoints import KIND, load_policy
from esper.policies.emrakul import EmrakulPolicy, SpecialistActor, SurgeonGeneral
from esper.policies.learners import MAPPOLearner, MAPPOSpecialists, RolloutBuffer, make_learner
from esper.policies.learners.specialists import SPECIALIST_AUX_COEF
from esper.registry import InvalidParameterError

_SHIPPED = Path(__file__).parents[2] / "benchmarks" / "results" / "quality-emrakul.pt"

_GSNR = 2
"""The toy observation column standing for a gradient-group feature (``log_gsnr``)."""

_IRRELEVANT = 4
"""A toy column the reward does not depend on."""


def _store_toy_episode(
    learner: MAPPOLearner, obs: torch.Tensor, gen: torch.Generator, noise: float = 0.0
) -> None:
    """One path of ``obs`` ``[steps, agents, d]``; each step's team reward is the agents' mean
    of column :data:`_GSNR` (plus Gaussian ``noise``)."""
    actor = learner.actor
    ids = torch.arange(obs.shape[1]) % 2
    for o in obs:
        with torch.no_grad():
            dist = actor.distribution(o, ids)
            raw = dist.sample(gen)
            log_prob = dist.log_prob(raw)
        reward = float(o[:, _GSNR].mean() + noise * torch.randn(1, generator=gen))
        learner.store(o, ids, torch.zeros(3), raw, log_prob, reward, False)
    learner.finish_path(None, ids)


def test_the_aux_loss_falls_when_a_gradient_feature_predicts_the_reward() -> None:
    torch.manual_seed(0)
    actor = SpecialistActor(obs_dim=6, max_layers=2, hidden=32)
    learner = MAPPOLearner(actor, state_dim=3, max_agents=2, aux_coef=1.0, epochs=1, seed=0)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 1, 6, generator=gen)  # one batch, learned from 40 times
    metrics = []
    for _ in range(40):
        _store_toy_episode(learner, obs, gen)
        metrics.append(learner.update())
    first, last = metrics[0], metrics[-1]
    assert first["aux_loss"] == pytest.approx(1.0) and first["aux_r2"] == pytest.approx(0.0)
    assert last["aux_loss"] < 0.5 * first["aux_loss"], [m["aux_loss"] for m in metrics]
    assert last["aux_r2"] > 0.5
    assert all(m["aux_loss"] <= n["aux_loss"] + 1e-6 for n, m in itertools.pairwise(metrics))


def _trunk_response(actor: SpecialistActor, column: int, gen: torch.Generator) -> float:
    test = torch.randn(256, 6, generator=gen)
    hidden = test.clone()
    hidden[:, column] = 0.0
    ids = torch.zeros(256, dtype=torch.long)
    with torch.no_grad():
        return float((actor.features(hidden, ids) - actor.features(test, ids)).abs().mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_the_aux_loss_makes_the_trunk_encode_what_predicts_the_reward(seed: int) -> None:
    """The mechanism's claim, on a toy with a noisy reward: with the head, the trunk responds
    more to the predictive column than to an irrelevant one; without it, not."""
    ratios = {}
    for coef in (0.0, SPECIALIST_AUX_COEF):
        torch.manual_seed(seed)
        actor = SpecialistActor(obs_dim=6, max_layers=2, hidden=64)
        learner = MAPPOLearner(actor, state_dim=3, max_agents=2, aux_coef=coef, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(12):
            _store_toy_episode(learner, torch.randn(16, 3, 6, generator=gen), gen, noise=0.5)
            learner.update()
        probe = torch.Generator().manual_seed(99)
        relevant = _trunk_response(actor, _GSNR, probe)
        ratios[coef] = relevant / _trunk_response(actor, _IRRELEVANT, probe.manual_seed(99))
    assert ratios[SPECIALIST_AUX_COEF] > 1.3 and ratios[SPECIALIST_AUX_COEF] > ratios[0.0] + 0.3


def _plain_mappo_update(learner: MAPPOLearner) -> None:
    """MAPPOLearner.update as it was before the auxiliary head (the reference of bit-identity)."""
    data = learner.buffer.data()
    learner.buffer.clear()
    learner.value_norm.update(data["return"])
    adv = data["advantage"]
    adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    targets = learner.value_norm.normalize(data["return"]).float()
    n = adv.shape[0]
    size = max(1, n // learner.minibatches)
    for _ in range(learner.epochs):
        order = torch.randperm(n, generator=learner.generator)
        for start in range(0, n, size):
            idx = order[start : start + size]
            dist = learner.actor.distribution(data["obs"][idx], data["ids"][idx])
            ratio = torch.exp(dist.log_prob(data["action"][idx]) - data["log_prob"][idx])
            a = adv[idx]
            surrogate = torch.min(ratio * a, ratio.clamp(1 - learner.clip, 1 + learner.clip) * a)
            policy_loss = -surrogate.mean() - learner.entropy_coef * dist.entropy().mean()
            learner.actor_optimizer.zero_grad()
            policy_loss.backward()
            nn.utils.clip_grad_norm_(learner.actor.parameters(), learner.max_grad_norm)
            learner.actor_optimizer.step()
            value = learner.critic(data["state"][idx], data["ids"][idx])
            value_loss = F.huber_loss(value, targets[idx], delta=learner.huber_delta)
            learner.critic_optimizer.zero_grad()
            value_loss.backward()
            nn.utils.clip_grad_norm_(learner.critic.parameters(), learner.max_grad_norm)
            learner.critic_optimizer.step()
    learner.updates += 1


def _twin_learner(aux_coef: float) -> MAPPOLearner:
    torch.manual_seed(3)
    actor = SpecialistActor(obs_dim=6, max_layers=2, hidden=16)
    learner = MAPPOLearner(actor, 3, 2, aux_coef=aux_coef, minibatches=2, seed=4)
    gen = torch.Generator().manual_seed(5)
    _store_toy_episode(learner, torch.randn(8, 3, 6, generator=gen), gen)
    return learner


def _same_networks(a: MAPPOLearner, b: MAPPOLearner) -> bool:
    pairs = [(a.critic.state_dict(), b.critic.state_dict())]
    pairs.append((a.actor.state_dict(), b.actor.state_dict()))  # type: ignore[attr-defined]
    return all(torch.equal(x[k], y[k]) for x, y in pairs for k in x)


def test_aux_coef_zero_is_plain_mappo_bit_for_bit() -> None:
    ours, plain, aux = _twin_learner(0.0), _twin_learner(0.0), _twin_learner(SPECIALIST_AUX_COEF)
    assert ours.aux_head is None and _same_networks(ours, plain)
    metrics = ours.update()
    _plain_mappo_update(plain)
    assert "aux_loss" not in metrics and "aux_r2" not in metrics
    assert _same_networks(ours, plain)
    aux.update()
    assert not _same_networks(ours, aux)  # the comparison can tell the head's update apart


def test_the_rollout_buffer_keeps_each_steps_team_reward_for_every_agent() -> None:
    buffer = RolloutBuffer()
    for reward in (1.0, 2.0):
        buffer.add(torch.zeros(3, 2), torch.arange(3), torch.zeros(4), torch.zeros(3, 1),
                   torch.zeros(3), torch.zeros(3), reward, False)  # fmt: skip
    buffer.finish_path(torch.zeros(3))
    assert buffer.data()["reward"].tolist() == [1.0] * 3 + [2.0] * 3
    old = buffer.state_dict()
    del old["rows"]["reward"]  # finished by an Esper that kept no rewards
    buffer.load_state_dict(old)
    assert buffer.data()["reward"].isnan().all()


def test_unknown_rewards_are_left_out_of_the_aux_regression() -> None:
    actor = SpecialistActor(obs_dim=6, max_layers=2, hidden=16)
    learner = MAPPOLearner(actor, 3, 2, aux_coef=1.0)
    gen = torch.Generator().manual_seed(0)
    _store_toy_episode(learner, torch.randn(6, 2, 6, generator=gen), gen)
    state = learner.state_dict()
    del state["buffer"]["rows"]["reward"]
    learner.load_state_dict(state)
    assert "aux_loss" not in learner.update()  # nothing known to predict: plain MAPPO
    _store_toy_episode(learner, torch.randn(6, 2, 6, generator=gen), gen)
    assert {"aux_loss", "aux_r2"} <= learner.update().keys()


def test_the_general_can_learn_with_the_aux_head_too() -> None:
    general = SurgeonGeneral(state_dim=5, max_layers=3, hidden=16)
    learner = MAPPOLearner(general, 5, 1, aux_coef=0.5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.zeros(1, dtype=torch.long)
    for _ in range(6):
        state = torch.randn(5, generator=gen)
        with torch.no_grad():
            dist = general.distribution(state[None])
            raw = dist.sample(gen)
        learner.store(state[None], ids, state, raw, dist.log_prob(raw), float(state[0]), False)
    learner.finish_path(None, ids)
    assert {"aux_loss", "aux_r2"} <= learner.update().keys()


def test_aux_parameters_are_validated() -> None:
    actor = SpecialistActor(obs_dim=4, max_layers=2, hidden=8)
    with pytest.raises(ValueError, match=re.escape("aux_coef=-0.1 must be a finite number ≥ 0")):
        MAPPOLearner(actor, 4, 2, aux_coef=-0.1)
    with pytest.raises(ValueError, match="aux_lr=0"):
        MAPPOLearner(actor, 4, 2, aux_coef=0.5, aux_lr=0)

    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))

        def distribution(self, obs: torch.Tensor, ids: torch.Tensor) -> None:
            return None

    with pytest.raises(TypeError, match="needs an actor with features"):
        MAPPOLearner(Bare(), 4, 2, aux_coef=0.5)  # type: ignore[arg-type]
    MAPPOLearner(Bare(), 4, 2, aux_coef=0.0)  # type: ignore[arg-type]


def _policy(**params: object) -> EmrakulPolicy:
    policy = EmrakulPolicy(seed=0, **params)  # type: ignore[arg-type]
    policy.build(obs_dim=6, state_dim=5)
    return policy


def test_the_specialists_learner_sets_its_aux_default_and_refuses_unknown_params() -> None:
    learner = make_learner("mappo", _policy(), {"seed": 1})
    assert isinstance(learner, MAPPOSpecialists)
    assert learner.params["aux_coef"] == SPECIALIST_AUX_COEF > 0
    assert learner.mappo.aux_head is not None
    plain = make_learner("mappo", _policy(), {"aux_coef": 0.0})
    assert isinstance(plain, MAPPOSpecialists) and plain.mappo.aux_head is None
    with pytest.raises(InvalidParameterError, match=r"no parameter 'aux_coeff'.*aux_coef"):
        make_learner("mappo", _policy(), {"aux_coeff": 0.5})


def test_the_aux_head_round_trips_and_old_states_without_it_load() -> None:
    source = make_learner("mappo", _policy(), {"seed": 1, "aux_lr": 0.01})
    assert isinstance(source, MAPPOSpecialists) and source.mappo.aux_head is not None
    with torch.no_grad():
        source.mappo.aux_head.weight.fill_(0.25)
    state = source.state_dict()
    copy = make_learner("mappo", _policy(), {"seed": 1, "aux_lr": 0.02})
    copy.load_state_dict(state)
    assert isinstance(copy, MAPPOSpecialists) and copy.mappo.aux_head is not None
    assert torch.equal(copy.mappo.aux_head.weight, source.mappo.aux_head.weight)
    assert copy.mappo.aux_optimizer is not None
    assert [g["lr"] for g in copy.mappo.aux_optimizer.param_groups] == [0.02]  # its own rate
    old = {**state, "mappo": {k: v for k, v in state["mappo"].items() if not k.startswith("aux")}}
    fresh = make_learner("mappo", _policy(), {"seed": 1})
    fresh.load_state_dict(old)  # an Esper older than the head: the head stays at zero
    assert isinstance(fresh, MAPPOSpecialists) and fresh.mappo.aux_head is not None
    assert not fresh.mappo.aux_head.weight.any()
    make_learner("mappo", _policy(), {"aux_coef": 0.0}).load_state_dict(state)  # head ignored


def test_the_shipped_checkpoint_loads_and_its_learner_gains_a_fresh_head() -> None:
    policy = load_policy(_SHIPPED)
    assert isinstance(policy, EmrakulPolicy) and policy.greedy
    assert policy.sensor_dropout == 0.0
    saved = load_checkpoint(_SHIPPED, KIND)["learner"]
    assert "aux_coef" not in saved["params"] and "aux_head" not in saved["state"]["mappo"]
    learner = make_learner(saved["name"], policy, saved["params"])
    learner.load_state_dict(saved["state"])
    assert isinstance(learner, MAPPOSpecialists) and learner.mappo.aux_head is not None
