"""PBT's fitness: the smoothing window, its state, and the config keys that shape it."""

from __future__ import annotations

import math

import pytest

from esper.conf import ConfigError, compose
from esper.platform.fitness import Fitness


def test_the_fitness_averages_the_last_window_iterations() -> None:
    fitness = Fitness(3)
    assert math.isnan(fitness.value)
    got = [fitness.update(v) for v in (0.1, 0.2, 0.3, 0.4, float("nan"), 0.6)]
    expected = [0.1, 0.15, 0.2, 0.3, 0.3, (0.3 + 0.4 + 0.6) / 3]  # nan: no twin compared
    assert got == pytest.approx(expected)
    assert Fitness(1).update(0.25) == 0.25
    with pytest.raises(ValueError, match="fitness_window must be ≥ 1"):
        Fitness(0)


def test_the_fitness_history_round_trips_and_fits_a_shorter_window() -> None:
    fitness = Fitness(3)
    for v in (0.1, 0.2, 0.3, 0.4):
        fitness.update(v)
    again = Fitness(3)
    again.load_state_dict(fitness.state_dict())
    assert again.update(0.5) == fitness.update(0.5) == pytest.approx(0.4)
    shorter = Fitness(2)
    shorter.load_state_dict(fitness.state_dict())
    assert list(shorter.history) == [0.4, 0.5]


def test_sweeps_rank_by_fitness_against_a_rigl_twin_and_runs_skip_it() -> None:
    pbt = compose(["search=pbt"]).search
    assert (pbt.metric, pbt.reference, pbt.fitness_window) == ("fitness", "rigl", 3)
    alone = compose([]).search  # search=none: nothing is ranked
    assert (alone.metric, alone.reference) == ("online_accuracy", "none")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search=pbt", "search.fitness_window=0"], r"search\.fitness_window must be ≥ 1"),
        (
            ["search=pbt", "search.reference=none"],
            r"search\.metric=fitness .* search\.reference=none:",
        ),
        (["search=pbt", "search.reference=gmp"], r"unknown search\.reference 'gmp'; valid: none"),
        (["search.metric=fitness"], r"set search\.reference=rigl"),
    ],
)
def test_bad_fitness_settings_are_refused_by_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose(overrides)
