"""Layer budgets (uniform, ERK) and temperature schedules."""

from __future__ import annotations

import math

import pytest

from esper.registry import InvalidParameterError, UnknownNameError
from esper.workloads.scalpel import DISTRIBUTIONS, TEMPERATURE_SCHEDULES, allocate
from esper.workloads.scalpel import make_temperature_schedule as schedule
from esper.workloads.scalpel.allocation import erk_densities

LENET = {"l0": (300, 784), "l1": (100, 300), "l2": (10, 100)}
CONVNET = {"c0": (16, 3, 3, 3), "c1": (32, 16, 3, 3), "fc": (64, 512), "head": (10, 64)}


@pytest.mark.parametrize("distribution", DISTRIBUTIONS.names())
@pytest.mark.parametrize("shapes", [LENET, CONVNET], ids=["lenet", "convnet"])
@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.333, 0.5, 0.9, 1.0])
def test_budgets_are_exact(distribution: str, shapes: dict, density: float) -> None:
    counts = allocate(shapes, density, distribution)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(counts.values()) == round(density * total)
    for name, shape in shapes.items():
        assert 0 <= counts[name] <= math.prod(shape)


def test_uniform_is_uniform_within_one_weight() -> None:
    counts = allocate(LENET, 0.1, "uniform")
    for name, shape in LENET.items():
        assert abs(counts[name] - 0.1 * math.prod(shape)) < 1


def test_erk_follows_the_formula_and_clips_at_one() -> None:
    d = erk_densities(CONVNET, 0.1, frozenset())
    raw = {n: sum(s) / math.prod(s) for n, s in CONVNET.items()}
    # unclipped layers: density ∝ (Σ dims) / (Π dims)
    free = [n for n in CONVNET if d[n] < 1.0]
    ratios = {n: d[n] / raw[n] for n in free}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()))
    weighted = sum(d[n] * math.prod(s) for n, s in CONVNET.items())
    assert weighted == pytest.approx(0.1 * sum(math.prod(s) for s in CONVNET.values()))
    # at high density the smallest layers saturate and the rest is redistributed
    high = erk_densities(CONVNET, 0.6, frozenset())
    assert high["c0"] == 1.0 and high["head"] == 1.0 and max(high.values()) == 1.0
    assert sum(high[n] * math.prod(s) for n, s in CONVNET.items()) == pytest.approx(
        0.6 * sum(math.prod(s) for s in CONVNET.values())
    )
    counts = allocate(LENET, 0.05, "erk")
    assert counts["l2"] / 1000 > counts["l0"] / (300 * 784)  # small layers denser


def test_keep_dense_counts_in_the_global_budget() -> None:
    counts = allocate(LENET, 0.1, "uniform", dense=["l2"])
    assert counts["l2"] == 1000
    assert sum(counts.values()) == round(0.1 * (235200 + 30000 + 1000))
    with pytest.raises(ValueError, match="alone hold"):
        allocate(LENET, 0.001, "uniform", dense=["l1"])
    with pytest.raises(ValueError, match="not prunable"):
        allocate(LENET, 0.1, "uniform", dense=["nope"])


def test_bad_density_and_unknown_distribution() -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        allocate(LENET, 0.0)
    with pytest.raises(UnknownNameError, match="valid layer distributions: erk, uniform"):
        allocate(LENET, 0.1, "random")


def test_temperature_schedules() -> None:
    assert TEMPERATURE_SCHEDULES.names() == ["constant", "cosine", "exponential", "linear"]
    assert schedule("constant", {"tau": 0.7})(123) == 0.7
    exp = schedule("exponential", {"tau0": 2.0, "rate": 0.1, "tau_min": 0.5})
    assert exp(0) == 2.0 and exp(10) == pytest.approx(2.0 * math.exp(-1.0)) and exp(1000) == 0.5
    lin = schedule("linear", {"tau0": 1.0, "tau1": 0.2, "steps": 10})
    assert lin(0) == 1.0 and lin(5) == pytest.approx(0.6) and lin(20) == pytest.approx(0.2)
    cos = schedule("cosine", {"tau0": 1.0, "tau1": 0.2, "steps": 10})
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.6) and cos(10) == pytest.approx(0.2)
    assert cos(2) > lin(2)  # cosine starts slowly
    with pytest.raises(InvalidParameterError, match="no parameter 'tau_max'"):
        schedule("linear", {"tau_max": 1.0})
    with pytest.raises(ValueError, match="must be > 0"):
        schedule("constant", {"tau": 0.0})
    with pytest.raises(UnknownNameError, match="valid temperature schedules"):
        schedule("step")
