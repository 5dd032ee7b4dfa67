"""The ``search`` group as Ray Tune objects: the parameter space, the scheduler, the searcher.

A trial's config is ``{"esper": <the composed config as plain data>, "run_dir": ..., KEY:
value...}`` where each ``KEY`` of ``search.bounds`` (``reward.beta``,
``policy.params.heat_tau``, ...) is sampled by the algorithm:

* ``none``: no key is sampled; ``num_samples`` copies of the composed config.
* ``random``: uniform draws in each bound (Tune's basic variant generator).
* ``grid``: ``grid_points`` evenly spaced values per bound, every combination.
* ``pbt`` (Jaderberg et al. 2017, "Population Based Training of Neural Networks"): uniform
  initial values; every ``perturbation_interval`` iterations the bottom ``quantile_fraction``
  copies a top member's checkpoint (exploit) and perturbs its values by ×1.2/×0.8 or, with
  ``resample_probability``, redraws them (explore), clipped into their bounds (which lie
  inside each key's valid range, :mod:`esper.conf.searchable`). Synchronous: members wait
  for each other at every perturbation, so each exploit compares and copies members of the same age.
* ``pb2`` (Parker-Holder et al. 2020, "Provably Efficient Online Hyperparameter Optimization
  with Population-Based Bandits"): PBT whose explore step picks new values with a GP bandit
  inside the bounds.
* ``optuna``: Optuna's TPE sampler through ``OptunaSearch`` (Akiba et al. 2019).

The fitness (``search.metric``; by default ``fitness``, online accuracy relative to a RigL twin
on the same batches, smoothed over iterations: :mod:`esper.platform.fitness`) is never the shaped
reward: members with other reward weights earn rewards of other scales.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray.tune.schedulers.pbt as pbt_module
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from esper.conf.searchable import clip_to_bound
from esper.config import EsperConfig, SearchAlgorithm, to_plain

__all__ = [
    "CONFIG_KEY",
    "RUN_DIR_KEY",
    "SeededPB2",
    "SeededPBT",
    "param_space",
    "scheduler",
    "search_algorithm",
]

CONFIG_KEY = "esper"
"""Key of the composed config (plain data) in a trial's config."""

RUN_DIR_KEY = "run_dir"
"""Key of the run directory in a trial's config."""

_TIME_ATTR = "training_iteration"


def _seed(cfg: EsperConfig) -> int:
    return cfg.experiment.seed if cfg.search.seed is None else cfg.search.seed


def param_space(cfg: EsperConfig, run_dir: str) -> dict[str, object]:
    """The Tune parameter space of ``cfg``'s search (see the module docstring)."""
    search = cfg.search
    space: dict[str, object] = {CONFIG_KEY: to_plain(cfg), RUN_DIR_KEY: run_dir}
    algorithm = SearchAlgorithm(search.algorithm)
    for key, (low, high) in search.bounds.items():
        if algorithm == SearchAlgorithm.none:
            continue
        if algorithm == SearchAlgorithm.grid:
            points = np.linspace(float(low), float(high), search.grid_points)
            space[key] = tune.grid_search([float(p) for p in points])
        else:
            space[key] = tune.uniform(float(low), float(high))
    return space


class _OwnRandomness:
    """PBT's and PB2's decisions drawn from generators of their own, seeded.

    Tune's schedulers draw from the process-wide ``random`` and ``numpy.random`` streams
    (``pbt._explore``'s ×1.2/×0.8 choices, the clone chosen, resampled values, PB2's GP
    starting points), which other threads of the driver also draw from, at moments that vary
    from run to run: the same seed then explored different values (found by the
    population-sweep determinism test). Each decision callback runs with the PBT module's
    ``random`` replaced by this scheduler's own ``random.Random`` and numpy's global state
    swapped for this scheduler's, so the exploration sequence depends on the seed only.
    """

    def _own(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._numpy = np.random.RandomState(seed % 2**32).get_state()

    @contextlib.contextmanager
    def _drawing(self) -> Iterator[None]:
        outer_module, outer_numpy = pbt_module.random, np.random.get_state()
        pbt_module.random = self._random  # type: ignore[assignment]
        np.random.set_state(self._numpy)
        try:
            yield
        finally:
            self._numpy = np.random.get_state()
            np.random.set_state(outer_numpy)
            pbt_module.random = outer_module

    def on_trial_add(self, *args: Any, **kwargs: Any) -> Any:
        with self._drawing():
            return super().on_trial_add(*args, **kwargs)  # type: ignore[misc]

    def on_trial_result(self, *args: Any, **kwargs: Any) -> Any:
        with self._drawing():
            return super().on_trial_result(*args, **kwargs)  # type: ignore[misc]

    def choose_trial_to_run(self, *args: Any, **kwargs: Any) -> Any:
        with self._drawing():
            return super().choose_trial_to_run(*args, **kwargs)  # type: ignore[misc]


class SeededPBT(_OwnRandomness, PopulationBasedTraining):
    """:class:`PopulationBasedTraining` whose exploration depends on ``seed`` only."""

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._own(seed)


class SeededPB2(_OwnRandomness, PB2):
    """:class:`PB2` whose exploration depends on ``seed`` only."""

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._own(seed)


def scheduler(cfg: EsperConfig) -> TrialScheduler | None:
    """PBT or PB2 over ``search.bounds`` (``None`` for the other algorithms)."""
    search = cfg.search
    algorithm = SearchAlgorithm(search.algorithm)
    if algorithm == SearchAlgorithm.pbt:
        return SeededPBT(
            _seed(cfg),
            time_attr=_TIME_ATTR,
            perturbation_interval=search.perturbation_interval,
            hyperparam_mutations={
                k: tune.uniform(float(lo), float(hi)) for k, (lo, hi) in search.bounds.items()
            },
            quantile_fraction=search.quantile_fraction,
            resample_probability=search.resample_probability,
            custom_explore_fn=functools.partial(clip_to_bound, bounds=dict(search.bounds)),
            synch=True,
        )
    if algorithm == SearchAlgorithm.pb2:
        return SeededPB2(
            _seed(cfg),
            time_attr=_TIME_ATTR,
            perturbation_interval=search.perturbation_interval,
            hyperparam_bounds={k: [float(lo), float(hi)] for k, (lo, hi) in search.bounds.items()},
            quantile_fraction=search.quantile_fraction,
            custom_explore_fn=functools.partial(clip_to_bound, bounds=dict(search.bounds)),
            synch=True,
        )
    return None


def search_algorithm(cfg: EsperConfig) -> Searcher | None:
    """Optuna's TPE searcher for ``optuna`` (``None`` for the other algorithms)."""
    if SearchAlgorithm(cfg.search.algorithm) == SearchAlgorithm.optuna:
        return OptunaSearch(seed=_seed(cfg))
    return None
