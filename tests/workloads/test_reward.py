"""The surgery reward: its five raw terms, their weighted sum and the divergence reward."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import cast

import pytest

from esper.config import RewardConfig
from esper.workloads.reward import DIVERGED_REWARD, RewardComponents, score_surgery
from esper.workloads.sensors import Reading

COMPONENTS = RewardComponents(accuracy=0.8, flops=0.25, oscillation=0.1, gsnr=0.5, spike=0.2)


def test_weighted_sum_by_hand() -> None:
    weights = RewardConfig(alpha=1.0, beta=2.0, gamma=3.0, delta=4.0, epsilon=5.0)
    # 1·0.8 − 2·0.25 − 3·0.1 + 4·0.5 − 5·0.2
    assert COMPONENTS.weighted(weights) == pytest.approx(0.8 - 0.5 - 0.3 + 2.0 - 1.0)


@pytest.mark.parametrize(
    ("weight", "term"),
    [
        ("alpha", 0.8),
        ("beta", -0.25),
        ("gamma", -0.1),
        ("delta", 0.5),
        ("epsilon", -0.2),
    ],
)
def test_each_weight_scales_its_own_term_with_its_sign(weight: str, term: float) -> None:
    zero = dict.fromkeys(("alpha", "beta", "gamma", "delta", "epsilon"), 0.0)
    assert COMPONENTS.weighted(RewardConfig(**{**zero, weight: 2.0})) == pytest.approx(2 * term)


def _reading(rates: dict[str, float], gsnr_mean: float) -> Reading:
    """Only what ``score_surgery`` reads: reversal rates and the mean GSNR."""
    fake = SimpleNamespace(
        flipflop={n: SimpleNamespace(reversal_rate=r, rate=1.0) for n, r in rates.items()},
        gradients=SimpleNamespace(gsnr_mean=gsnr_mean),
    )
    return cast(Reading, fake)


def test_score_surgery_by_hand() -> None:
    sizes = {"a": 100, "b": 300}
    got = score_surgery(
        _reading({"a": 0.2, "b": 0.6}, gsnr_mean=3.0),
        accuracy=0.7,
        flops_ratio=0.3,
        sizes=sizes,
        loss_before=2.0,
        loss_after=3.0,
    )
    assert (got.accuracy, got.flops) == (0.7, 0.3)
    assert got.oscillation == pytest.approx((0.2 * 100 + 0.6 * 300) / 400)
    assert got.gsnr == pytest.approx(3.0 / (1.0 + 3.0))
    assert got.spike == pytest.approx(0.5 / 1.5)  # a rise of half, squashed


def test_layers_without_flipflop_records_count_as_not_oscillating() -> None:
    got = score_surgery(_reading({"a": 0.4}, 0.0), 0.5, 0.5, {"a": 100, "b": 300}, 1.0, 1.0)
    assert got.oscillation == pytest.approx(0.4 * 100 / 400)


@pytest.mark.parametrize(("before", "after"), [(2.0, 1.0), (2.0, 2.0)])
def test_a_falling_or_flat_loss_is_no_spike(before: float, after: float) -> None:
    got = score_surgery(_reading({}, 1.0), 0.5, 0.5, {"a": 1}, before, after)
    assert got.spike == 0.0


@pytest.mark.parametrize("gsnr_mean", [float("nan"), float("inf")])
def test_an_unmeasurable_gsnr_scores_zero(gsnr_mean: float) -> None:
    assert score_surgery(_reading({}, gsnr_mean), 0.5, 0.5, {"a": 1}, 1.0, 1.0).gsnr == 0.0


def test_the_spike_is_squashed_so_a_tiny_control_loss_cannot_blow_it_up() -> None:
    got = score_surgery(_reading({}, 1.0), 0.5, 0.5, {"a": 1}, 1e-4, 1.0)
    assert 0.99 < got.spike < 1.0


def test_the_divergence_reward_is_below_a_live_organisms_worst() -> None:
    """Zero accuracy, dense FLOPs, every weight flipping, no GSNR and the largest spike."""
    worst = RewardComponents(accuracy=0.0, flops=1.0, oscillation=1.0, gsnr=0.0, spike=1.0)
    assert worst.weighted(RewardConfig()) > DIVERGED_REWARD
    best = RewardComponents(accuracy=1.0, flops=0.0, oscillation=0.0, gsnr=1.0, spike=0.0)
    assert DIVERGED_REWARD < 0.0 < best.weighted(RewardConfig())


@pytest.mark.parametrize(("before", "after"), [(1.0, math.nan), (1.0, math.inf), (math.nan, 1.0)])
def test_a_non_finite_loss_has_no_spike_rather_than_a_zero_one(before: float, after: float) -> None:
    got = score_surgery(_reading({}, 1.0), 0.5, 0.5, {"a": 1}, before, after)
    assert math.isnan(got.spike)
