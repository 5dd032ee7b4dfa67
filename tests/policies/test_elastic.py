"""The elastic budget: densities that breathe while a run's mean FLOPs stay on budget."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from esper.conf import compose
from esper.policies.baselines.elastic_rigl import ElasticRigL
from esper.policies.checkpoints import load_policy, save_policy
from esper.policies.drift import LossDrift
from esper.policies.elastic import ElasticBudget, ElasticDensity, FlopCost, elastic_bounds
from esper.policies.emrakul import EmrakulPolicy
from esper.policies.evaluation import evaluate_policy
from esper.policies.training import train_policy
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from tests.organisms import TINY_ORGANISM

# 3 tasks × 40 steps, K = 4: the reset's 4 steps and 29 surgeries cover the stream exactly.
_STREAM = ["workload.num_tasks=3", "workload.schedule.params.task_length=40"]
_SURGERIES = 3 * 40 // 4 - 1


def _organism(*extra: str) -> Organism:
    return build_organism(compose([*TINY_ORGANISM, *_STREAM, *extra]))


def test_bounds_keep_the_rest_of_the_run_feasible() -> None:
    """Hand case: budget 0.1 over 100 steps, densities in [0.05, 0.2], one layer of 1,000
    weights (ratio = density). After 40 steps at 0.05 the account owes 10 − 2 = 8 ratio-steps
    over 60 steps; the next 10 may hold r with 8 − 0.2·50 ≤ 10 r ≤ 8 − 0.05·50."""
    account = ElasticBudget(0.1, 0.05, 0.2, horizon=100)
    cost = FlopCost(0.0, (1.0,), 1000.0)
    account.record(0.05, 40)
    lo, hi = account.bounds(10, cost, [1000])
    assert lo == pytest.approx(0.05)  # (8 − 10) / 10 < 0.05: the floor binds
    assert hi == pytest.approx(0.2)  # (8 − 2.5) / 10 = 0.55 > 0.2: the ceiling binds
    account.record(0.2, 90)  # 50 steps at 0.2: owed 8 − 10 = −2 over 10 steps
    lo, hi = account.bounds(10, cost, [1000])
    assert lo == hi == pytest.approx(-0.2)  # the last interval is exact (here infeasible)


def test_any_requests_end_on_the_budget() -> None:
    """Whatever a surgeon asks for, the granted densities average to the budget."""
    rng = random.Random(0)
    cost = FlopCost(0.0, (1.0, 1.0), 20_000.0)
    for budget, span in ((0.1, 2.0), (0.05, 3.0)):
        account = ElasticBudget(budget, *elastic_bounds(budget, span), horizon=1000)
        granted = []
        for t in range(0, 1000, 25):
            account.record(granted[-1] if granted else budget, t)
            request = rng.choice([0.0, 1.0, rng.random()])
            density, counts = account.grant(
                request, 25, cost, [10_000, 10_000], lambda d: [round(d * 10_000)] * 2
            )
            assert account.low - 1e-9 <= density <= account.high + 1e-9
            granted.append(cost.ratio(counts))
        account.record(granted[-1], 1000)
        assert account.mean == pytest.approx(budget, rel=1e-3)
        assert max(granted) > budget * 1.2 and min(granted) < budget * 0.9  # it did breathe


def test_flop_cost_prices_a_convolution_by_its_positions() -> None:
    cost = FlopCost(fixed=10.0, per_weight=(4.0, 1.0), dense=110.0)  # a 20-weight conv, 20 fc
    assert cost.ratio([20, 20]) == pytest.approx(1.0)
    assert cost.ratio([5, 20]) == pytest.approx((10 + 20 + 20) / 110)
    with pytest.raises(ValueError, match="2 masked layers"):
        cost.ratio([1])


def test_bad_elastic_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="elastic_span"):
        elastic_bounds(0.1, 0.5)
    with pytest.raises(ValueError, match="low"):
        ElasticBudget(0.1, 0.2, 0.3, horizon=10)
    with pytest.raises(ValueError, match="amplitude"):
        EmrakulPolicy(elastic=True, amplitude=0.05)
    with pytest.raises(ValueError, match="use_general"):
        EmrakulPolicy(elastic=True, use_general=False)
    with pytest.raises(ValueError, match="threshold"):
        ElasticRigL(threshold=0.0)


def test_an_exploring_elastic_emrakul_holds_the_mean_flops_within_one_percent() -> None:
    """The issue's test: an untrained, widely exploring General asks for densities all over
    ``[0.1, 0.4]`` (budget 0.2); the run's mean FLOPs ratio lands within 1% of the budget."""
    organism = _organism()
    policy = EmrakulPolicy(budget=0.2, elastic=True, general_interval=1, seed=3)
    densities: list[float] = []

    def note(i: int, step: object) -> None:
        densities.append(organism.scalpel.global_density())
        if i == -1:
            assert policy.general is not None
            with torch.no_grad():
                policy.general.log_std.fill_(1.0)  # explore the density widely

    report = evaluate_policy(organism, policy, _SURGERIES, on_step=note)
    assert organism.sgd_step == len(organism.stream)
    assert report.mean_flops == pytest.approx(0.2, rel=0.01)
    assert max(densities) > 0.25 and min(densities) < 0.15  # it breathed
    assert policy.general is not None and policy.general.state_dim == (
        organism.current().global_state.width + len(ElasticDensity.FEATURES)
    )


def test_a_fixed_budget_emrakul_reports_its_constant_flops_as_the_mean() -> None:
    organism = _organism()
    report = evaluate_policy(organism, EmrakulPolicy(budget=0.2, seed=3), _SURGERIES)
    assert report.mean_flops == pytest.approx(report.flops, rel=0.01)


def test_an_elastic_episode_restored_mid_stream_acts_as_the_original() -> None:
    organism = _organism()
    policy = EmrakulPolicy(budget=0.2, elastic=True, general_interval=1, seed=5)
    step = organism.reset()
    policy.reset(organism, step)
    for _ in range(6):
        step = organism.step(policy.act(organism, step))
    twin_organism = _organism()
    twin_organism.load_state_dict(organism.state_dict())
    twin = EmrakulPolicy(budget=0.2, elastic=True, general_interval=1, seed=5)
    twin.load_state_dict(policy.state_dict())
    a, b = policy.act(organism, step), twin.act(twin_organism, twin_organism.current())
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(torch.as_tensor(a[name].prune), torch.as_tensor(b[name].prune))
        assert torch.equal(torch.as_tensor(a[name].regrow), torch.as_tensor(b[name].regrow))
    assert policy.episode.elastic is not None and twin.episode.elastic is not None
    assert twin.episode.elastic.account == policy.episode.elastic.account


def test_scripted_elastic_rigl_breathes_after_drifts_and_holds_the_mean() -> None:
    """On a permuted stream every task switch raises the loss: the scripted baseline detects
    it, spends density right after, and still ends on the budget."""
    organism = build_organism(compose([
        *TINY_ORGANISM, "workload=digits_permuted", "workload.num_tasks=3",
        "workload.schedule.params.task_length=100", "policy.surgery_interval=10",
        "workload.lr=0.1",
    ]))  # fmt: skip
    policy = ElasticRigL(delta_t=10, t_end=10_000, threshold=0.2, decay=2.0)
    densities: list[float] = []
    report = evaluate_policy(
        organism, policy, _SURGERIES,
        on_step=lambda i, s: densities.append(organism.scalpel.global_density()),
    )  # fmt: skip
    assert policy.drifts >= 1
    assert report.mean_flops == pytest.approx(0.2, rel=0.01)
    assert max(densities) > 0.25 and min(densities) < 0.15


def test_scripted_detector_flags_a_loss_jump_only() -> None:
    policy = ElasticRigL(threshold=0.5, smoothing=0.5)
    assert [policy.detect(x) for x in (1.0, 1.1, 0.9, 2.0, math.nan, 1.0)] == [
        False, False, False, True, False, False,
    ]  # fmt: skip


def test_an_elastic_emrakul_trains_with_the_account_in_every_state(tmp_path: Path) -> None:
    """Training sees the account's features in the decisions' states, the next states and the
    bootstrap alike (the critics' inputs), and the trained policy loads back elastic."""
    cfg = compose([
        "policy=emrakul", "policy.density=0.2", "policy.surgery_interval=3",
        "workload.batch_size=16", "workload.host.params.hidden=[16,8]",
        "workload.organism.sense_batches=2", "workload.organism.spike_window=2",
        "policy.training.surgeries=8", "policy.training.rollout=4", "experiment.seed=1",
        "+policy.params.general_interval=2", "+policy.params.elastic=true",
        "policy.training.imitation=2", "policy.training.control=rigl",
    ])  # fmt: skip
    result = train_policy(cfg)
    assert result.policy.elastic and result.policy.policy_version == 3  # imitation + 2 updates
    policy = load_policy(save_policy(tmp_path / "elastic.pt", result))
    assert isinstance(policy, EmrakulPolicy) and policy.elastic
    organism = build_organism(cfg)
    step = organism.reset()
    policy.reset(organism, step)
    policy.act(organism, step)
    assert policy.last is not None
    assert policy.last.state.numel() == step.global_state.width + len(ElasticDensity.FEATURES)
    assert torch.equal(policy.state_of(step)[: step.global_state.width], policy.last.state[:-3])


def test_loss_drift_marks_jumps_over_its_average_and_restores() -> None:
    detector = LossDrift(threshold=0.5, smoothing=0.5)
    assert [detector.update(x) for x in (1.0, 1.4, math.inf, 2.0, 1.0)] == [
        False, False, False, True, False,
    ]  # fmt: skip
    copy = LossDrift(threshold=0.5, smoothing=0.5)
    copy.load_state_dict(detector.state_dict())
    assert copy.update(3.0) == detector.update(3.0) is True
    detector.reset()
    assert detector.average is None and not detector.update(100.0)
    with pytest.raises(ValueError, match="threshold"):
        LossDrift(threshold=0.0)
