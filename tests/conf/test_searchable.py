"""Searchable keys: bounds inside each key's valid range, explored values inside the bounds."""

from __future__ import annotations

import random

import pytest
from ray.tune.schedulers.pbt import _explore

from esper.conf import ConfigError, compose
from esper.conf.searchable import SEARCHABLE, ValidRange, clip_to_bound
from esper.platform.search import param_space, scheduler

_BASE = ["policy=emrakul", "search=pbt"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.bounds.policy.params.heat_tau=[0.5,20]", r"valid range \[1, ∞\)"),
        ("search.bounds.policy.training.learner_params.lr=[0,0.01]", r"valid range \(0, ∞\)"),
        ("search.bounds.reward.beta=[-0.1,0.5]", r"-0.1 is outside"),
        ("search.bounds.policy.params.amplitude=[0,1.5]", r"\[0, 1\]"),
        ("search.bounds.reward.zeta=[0,1]", "not searchable; searchable keys: reward.alpha"),
        ("search.bounds.workload.scalpel.mechanism.params.tau=[0.5,2]", "mechanism 'masked'"),
        ("search.bounds.policy.training.learner_params.epsilon_end=[0,0.1]", "'mappo' has no"),
        ("search.bounds.reward.beta=[0.5,0.1]", "low < high"),
    ],
)
def test_bounds_outside_a_keys_valid_range_are_refused_naming_both(
    override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        compose([*_BASE, override])
    assert "search.bounds." in str(caught.value)


def test_temperatures_alpha_and_learning_rates_are_searchable() -> None:
    cfg = compose(
        [
            *_BASE,
            "workload.scalpel.mechanism.name=gumbel_softmax",
            "search.bounds={reward.alpha:[0.5,2],policy.params.heat_tau:[1,20]}",
            "search.bounds.workload.scalpel.mechanism.params.tau=[0.3,3]",
            "search.bounds.policy.training.learner_params.lr=[1e-4,1e-2]",
            "search.bounds.policy.training.general_params.lr=[1e-4,1e-2]",
        ]
    )
    for key in (
        "reward.alpha",
        "policy.params.heat_tau",
        "policy.training.learner_params.lr",
        "workload.scalpel.mechanism.params.tau",
        "policy.training.general_params.lr",
    ):
        assert key in cfg.search.bounds  # fmt: skip
    epsilon = "search.bounds.policy.training.learner_params.epsilon_end=[0.01,0.2]"
    qmix = compose([*_BASE, "policy.training.learner=qmix", epsilon])
    assert "policy.training.learner_params.epsilon_end" in qmix.search.bounds


def test_valid_ranges_read_as_intervals() -> None:
    assert str(ValidRange(low=1.0)) == "[1, ∞)"
    assert str(ValidRange(low_open=True, high=1.0)) == "(0, 1]"
    assert not ValidRange(low_open=True).contains(0.0) and ValidRange().contains(0.0)
    assert all(isinstance(v, ValidRange) for v in SEARCHABLE.values())


def test_a_bound_at_a_validity_edge_yields_no_invalid_value_over_1000_explores() -> None:
    """PBT's explore multiplies by 1.2 or 0.8 with no clipping of its own: starting at the
    edge of a bound that touches a key's valid edge, every explored value stays valid."""
    cfg = compose([*_BASE, "search.bounds.policy.params.heat_tau=[1,3]",
                   "search.bounds.policy.params.amplitude=[0.5,1]",
                   "search.bounds.policy.training.learner_params.lr=[1e-4,1e-2]"])  # fmt: skip
    pbt = scheduler(cfg)
    mutations, explore_fn = pbt._hyperparam_mutations, pbt._custom_explore_fn  # type: ignore[union-attr]
    config = {k: v for k, v in param_space(cfg, "/tmp").items() if k in cfg.search.bounds}
    config = {k: float(cfg.search.bounds[k][i % 2]) for i, k in enumerate(config)}
    random.seed(0)
    seen = {k: set() for k in config}
    for _ in range(1000):
        config, _ = _explore(config, mutations, 0.25, (1.2, 0.8), explore_fn)
        for key, value in config.items():
            low, high = cfg.search.bounds[key]
            assert low <= value <= high and SEARCHABLE[key].contains(value), (key, value)
            seen[key].add(value)
    assert all(len(values) > 10 for values in seen.values())  # it did explore


def test_clip_to_bound_leaves_other_keys() -> None:
    out = clip_to_bound({"a": 5.0, "esper": {"x": 1}, "b": -1}, {"a": [0, 1], "b": [0, 2]})
    assert out == {"a": 1.0, "esper": {"x": 1}, "b": 0.0}
