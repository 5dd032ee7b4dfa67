"""PBT replay: one member's hyperparameter schedule, re-run from scratch.

A PBT sweep's product is not one configuration but a schedule: the values a member started
with and those each exploit-and-explore gave it from some iteration on (Jaderberg et al. 2017,
section 3). :class:`ray.tune.schedulers.PopulationBasedTrainingReplay` trains one new trial
that follows such a schedule: the values change after the same iterations and the member
continues its own state (a replay copies no other member's weights: it is a reproducible run
of the schedule alone).

The schedule is read from the member's learning curve (``RUN/learning/<trial>.jsonl``), whose
rows carry the values each iteration ran with (``hp/<key>``), not from Tune's
``pbt_policy_<trial>.txt``: in a synchronous sweep that file logs the source member's
*previous* iteration when the source is the last to reach a perturbation, which would move a
replayed change one iteration early. Everything read is JSON (the learning curve and the
trial's ``params.json``): nothing of the source sweep is unpickled.

The replay is a run of its own (``esper sweep --replay RUN --trial T``): its own run directory,
event log, learning curve and MLflow run, with ``replay_of`` and ``replay_trial`` in its
``run.json``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler, PopulationBasedTrainingReplay
from rich.console import Console

from esper.conf import ConfigError, from_plain
from esper.config import HP_PREFIX, EsperConfig
from esper.events.learning import read_learning_curves
from esper.platform.search import CONFIG_KEY, RUN_DIR_KEY
from esper.platform.sweep import TUNE_DIR, SweepResult, collect, run_config, trainable

__all__ = ["ReplaySchedule", "replay_member", "replay_source", "schedule_of"]


class ReplaySchedule(PopulationBasedTrainingReplay):
    """Tune's PBT replay of a schedule given as data: ``first`` (the trial config the member
    starts with) and ``changes``, ``(iteration, config)`` pairs: after that iteration's result
    the member pauses (saving its state), takes ``config`` and continues its own state."""

    def __init__(self, first: dict[str, Any], changes: list[tuple[int, dict[str, Any]]]) -> None:
        FIFOScheduler.__init__(self)
        self.policy_file = ""
        self.experiment_tag = "replay"
        self.config = first
        self.current_config = first
        self._policy = list(changes)
        self._trial = None
        self._current_step = 0
        self._num_perturbations = 0
        self._policy_iter = iter(self._policy)
        self._next_policy = next(self._policy_iter, None)


def schedule_of(
    rows: list[dict[str, Any]], first: dict[str, Any], run_dir: Path
) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
    """The trial config of the first iteration and each change after it, from a member's
    learning-curve ``rows`` (its ``hp/<key>`` values per iteration), every config pointed at
    ``run_dir`` (the replay's; the logged configs name the source sweep's)."""
    rows = sorted(rows, key=lambda r: int(r["iteration"]))

    def config(row: dict[str, Any]) -> dict[str, Any]:
        values = {k[len(HP_PREFIX) :]: v for k, v in row.items() if k.startswith(HP_PREFIX)}
        return {**first, **values, RUN_DIR_KEY: str(run_dir)}

    if not rows:
        return {**first, RUN_DIR_KEY: str(run_dir)}, []
    changes = []
    for before, after in itertools.pairwise(rows):
        if config(after) != config(before):
            changes.append((int(before["iteration"]), config(after)))
    return config(rows[0]), changes


def _trial_dir(experiment: Path, trial: str) -> Path:
    found = [d for d in experiment.iterdir() if d.is_dir() and f"_{trial}_" in f"{d.name}_"]
    if len(found) != 1:
        trials = sorted(
            "_".join(d.name.split("_")[1:3]) for d in experiment.iterdir() if d.is_dir()
        )
        raise ConfigError(
            f"--trial {trial}: no single member of that id in {experiment}; members: "
            f"{', '.join(t for t in trials if t) or '(none)'}"
        )
    return found[0]


def replay_source(run: Path, trial: str) -> tuple[EsperConfig, dict[str, Any], list[dict]]:
    """The sweep's config, member ``trial``'s first trial config (``params.json``) and its
    learning-curve rows, read from the sweep's run directory ``run``.

    Raises:
        ConfigError: ``run`` is not a sweep's run directory, or ``trial`` is not one of its
            members (the members are listed).
    """
    run = run.expanduser().resolve()
    experiment = run / TUNE_DIR
    if not experiment.is_dir() or not (run / "run.json").is_file():
        raise ConfigError(f"--replay {run}: not a sweep's run directory (no run.json or tune/)")
    cfg = from_plain(json.loads((run / "run.json").read_text())["config"])
    params = _trial_dir(experiment, trial) / "params.json"
    if not params.is_file():
        raise ConfigError(f"--trial {trial}: {params} is missing; the sweep is incomplete")
    first = json.loads(params.read_text())
    if CONFIG_KEY not in first:
        raise ConfigError(f"--trial {trial}: {params} is not an Esper member's config")
    rows = [r for r in read_learning_curves(run) if r.get("trial") == trial]
    return cfg, first, rows


def replay_member(
    cfg: EsperConfig,
    first: dict[str, Any],
    rows: list[dict[str, Any]],
    run_dir: Path,
    console: Console,
) -> SweepResult:
    """Train one member on the schedule of ``rows`` (see :func:`schedule_of`) into
    ``run_dir`` (created, with its ``run.json``)."""
    start, changes = schedule_of(rows, first, run_dir)
    after = ", ".join(f"after iteration {i}" for i, _ in changes)
    console.print(f"replaying {len(rows)} iterations; values change {after or 'never'}")
    tuner = tune.Tuner(
        trainable(cfg),
        param_space={},
        tune_config=tune.TuneConfig(
            num_samples=1, scheduler=ReplaySchedule(start, changes), reuse_actors=True
        ),
        run_config=run_config(cfg, run_dir, console),
    )
    return collect(cfg, run_dir, tuner.fit())
