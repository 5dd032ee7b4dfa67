"""Variance-reduced credit: the control twin's accuracies per surgery, the controlled rewards
the learners get in training and on the platform, and the refusals of a bad control."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from esper.conf import ConfigError, compose
from esper.policies.credit import (
    Credit,
    check_control,
    controlled_reward,
    mean_control,
    twin_controls,
)
from esper.policies.reference import ReferenceTwins
from esper.policies.training import train_policy
from esper.workloads.factory import build_organism
from tests.policies.test_training import _BASE


def test_twin_controls_average_each_surgerys_steps() -> None:
    assert twin_controls([0.0, 1.0, 0.5, 0.5, 1.0, 1.0], 3, 2) == [0.5, 0.5, 1.0]


def test_a_twin_that_stopped_early_lends_its_mean_to_the_missing_surgeries() -> None:
    assert twin_controls([0.2, 0.4, 0.9], 3, 2) == pytest.approx([0.3, 0.9, 0.5])
    assert all(math.isnan(c) for c in twin_controls([], 2, 5))
    with pytest.raises(ValueError, match="interval"):
        twin_controls([0.1], 1, 0)


def test_controlled_reward_subtracts_alpha_times_the_control() -> None:
    assert controlled_reward(0.9, 2.0, 0.4) == pytest.approx(0.1)
    assert controlled_reward(0.9, 2.0, None) == 0.9
    assert controlled_reward(0.9, 2.0, math.nan) == 0.9
    assert mean_control([0.2, math.nan, 0.4]) == pytest.approx(0.3)
    assert math.isnan(mean_control([]))


def test_the_level_credit_subtracts_the_twin_and_the_change_credit_its_last_gap() -> None:
    level = Credit([0.5, 0.6], alpha=2.0)
    assert [level(1.0, 0.7), level(1.0, 0.9)] == pytest.approx([0.0, -0.2])
    assert level.used == [0.5, 0.6]
    # change: R − α·c_t − α·(a_{t−1} − c_{t−1}); before the episode a = 0.8, c = 0.6
    change = Credit([0.5, 0.6], alpha=2.0, form="change", before=(0.8, 0.6))
    assert change(1.0, 0.7) == pytest.approx(1.0 - 2 * 0.5 - 2 * 0.2)
    assert change(1.0, 0.9) == pytest.approx(1.0 - 2 * 0.6 - 2 * (0.7 - 0.5))
    # over an episode the accuracy parts telescope: α × (the last gap − the one before)
    again = Credit([0.5, 0.6], alpha=2.0, form="change", before=(0.8, 0.6))
    parts = [again(1.0, a) - (1.0 - 2.0 * a) for a in (0.7, 0.9)]
    assert sum(parts) == pytest.approx(2.0 * ((0.9 - 0.6) - (0.8 - 0.6)))
    with pytest.raises(ValueError, match="before"):
        Credit([0.5], 1.0, form="change")
    with pytest.raises(ValueError, match=r"policy\.training\.credit 'delta'"):
        Credit([0.5], 1.0, form="delta")


def test_an_unknown_or_dense_pruning_control_is_refused() -> None:
    check_control("none")
    check_control("rigl")
    with pytest.raises(ValueError, match=r"policy\.training\.control 'rigll'.*rigl"):
        check_control("rigll")
    with pytest.raises(ValueError, match="gmp"):
        check_control("gmp")  # prunes from dense: a twin starts at the budget


def test_composition_refuses_a_control_and_a_reference_that_differ() -> None:
    with pytest.raises(ConfigError, match=r"policy\.training\.control"):
        compose(["policy=emrakul", "policy.training.control=nope"])
    with pytest.raises(ConfigError, match="one twin"):
        compose(["policy=emrakul", "search=pbt", "search.reference=set",
                 "policy.training.control=rigl"])  # fmt: skip
    compose(["policy=emrakul", "search=pbt", "search.reference=rigl",
             "policy.training.control=rigl"])  # fmt: skip


def test_a_synced_twin_trains_on_its_organisms_batches() -> None:
    cfg = compose([*_BASE, "experiment.seed=3"])
    organism = build_organism(cfg, replica_id=0)
    organism.reset()
    organism.step({})  # the organism has lived a little before its twin joins
    twins = ReferenceTwins("static", lambda rid: build_organism(cfg, replica_id=rid), [0], 3)
    twins.sync(0, organism)
    twin = twins.organisms[0]
    assert twin.sgd_step == organism.sgd_step
    ours, theirs = organism.step({}), twin.step({})  # no surgery on either: the same numbers
    assert ours.info["accuracies"] == theirs.info["accuracies"]
    for a, b in zip(organism.host.parameters(), twin.host.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_under_a_control_learns_from_rewards_minus_the_twins_accuracy() -> None:
    cfg = compose([*_BASE, "policy.training.surgeries=6", "policy.training.rollout=3",
                   "experiment.seed=2", "policy.training.control=rigl",
                   "policy.training.credit=level"])  # fmt: skip
    result = train_policy(cfg)
    for m in result.history:
        assert not m["diverged"]
        w = cfg.reward
        raw = (w.alpha * m["r_accuracy"] - w.beta * m["r_flops"] - w.gamma * m["r_oscillation"]
               + w.delta * m["r_gsnr"] - w.epsilon * m["r_spike"])  # fmt: skip
        assert 0.0 < m["r_control"] < 1.0
        assert m["mean_reward"] == pytest.approx(raw - w.alpha * m["r_control"], abs=1e-9)
    change = train_policy(compose([*_BASE, "policy.training.surgeries=3",
                                   "policy.training.rollout=3", "experiment.seed=2",
                                   "policy.training.control=rigl",
                                   "policy.training.credit=change"]))  # fmt: skip
    assert math.isfinite(change.history[0]["mean_reward"])
    plain = train_policy(compose([*_BASE, "policy.training.surgeries=3",
                                  "policy.training.rollout=3", "experiment.seed=2"]))  # fmt: skip
    assert math.isnan(plain.history[0]["r_control"])


def test_the_platform_replica_rewards_against_its_twin(tmp_path: Path) -> None:
    from tests.platform.test_replica import _worker

    worker, learner = _worker(tmp_path, "policy.training.control=rigl")
    assert worker.twins is not None and worker.twins.policy_name == "rigl"
    (episode,) = worker.rollout(learner.acting_state(), 2)
    assert 0.0 < episode.metrics["r_control"] < 1.0
    assert math.isfinite(episode.metrics["relative_accuracy"])
    worker.close()
