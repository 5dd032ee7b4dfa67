"""Running populations: ``esper run`` (one member, no Tune) and ``esper sweep`` (Tune).

Both start Ray (embedded on this machine, or joining ``--address``), create the run directory
(``run.json``, ``config.yaml``; the members' event logs go under it, Tune's experiment under
``RUN/tune``, replicas' restart checkpoints under ``RUN/state``) and use the same
:class:`~esper.platform.population.Population`. A sweep is a Tune experiment over
:func:`~esper.platform.trainable.member_trainable`, tracked in MLflow from the driver, and can be
resumed from its run directory after an interruption (``esper sweep --resume RUN``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune
from rich.console import Console

from esper.checkpoint import save_checkpoint
from esper.config import EsperConfig, SearchAlgorithm
from esper.platform.population import Population
from esper.platform.progress import SweepProgress
from esper.platform.search import param_space, scheduler, search_algorithm
from esper.platform.tracking import EsperMLflowCallback, mlflow_uri, run_tags
from esper.platform.trainable import KIND, member_trainable, sampled_values

__all__ = ["TUNE_DIR", "SweepResult", "member_resources", "run_member", "run_sweep"]

TUNE_DIR = "tune"
"""Tune's experiment directory inside a sweep's run directory."""


@dataclass
class SweepResult:
    """What a sweep (or a single member) ends with.

    Attributes:
        run_dir: The run directory.
        members: One row per member: ``trial``, the fitness and the other final metrics, the
            sampled values.
        best: The best member's row (by ``search.metric`` and ``search.mode``).
        mlflow_uri: Where the runs are tracked (``None`` for ``esper run``).
        failed: Members that ended with an error (after Tune's retries): their trial
            directory's name and the error's last line.
    """

    run_dir: Path
    members: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    mlflow_uri: str | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)


def member_resources(cfg: EsperConfig) -> tune.PlacementGroupFactory:
    """A member's bundles: its learner (the trial's own actor), then one per replica."""
    replica: dict[str, float] = {"CPU": cfg.cluster.replica_cpus}
    if cfg.cluster.replica_gpus:
        replica["GPU"] = cfg.cluster.replica_gpus
    bundles = [{"CPU": cfg.cluster.learner_cpus}] + [replica] * cfg.policy.training.replicas
    return tune.PlacementGroupFactory(bundles)


def _best(members: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    scored = [m for m in members if isinstance(m.get(metric), float) and math.isfinite(m[metric])]
    if not scored:
        return {}
    return (max if mode == "max" else min)(scored, key=lambda m: m[metric])


def run_member(cfg: EsperConfig, run_dir: Path, console: Console) -> SweepResult:
    """One member for ``policy.training.iterations`` iterations on Ray actors, no Tune; saves
    the member's checkpoint as ``RUN/member.pt``."""
    population = Population(cfg, run_dir, "t0", run_dir / "state" / "t0")
    total = cfg.policy.training.iterations
    row: dict[str, Any] = {}
    try:
        progress = SweepProgress(console, [], total)
        while population.iteration < total:
            metrics = population.step()
            row = {"trial": "t0", **metrics}
            progress.rows["t0"] = {**metrics, "iteration": population.iteration}
            values = " ".join(
                f"{k}={metrics[k]:.3f}" for k in ("online_accuracy", "density", "mean_reward")
            )
            console.print(f"iteration {population.iteration}/{total}: {values}")
        save_checkpoint(run_dir / "member.pt", KIND, population.state_dict())
    finally:
        population.close()
    return SweepResult(run_dir, [row], row)


def run_sweep(cfg: EsperConfig, run_dir: Path, console: Console, resume: bool) -> SweepResult:
    """The population search of ``cfg.search`` over members (see the module docstring)."""
    seed = cfg.experiment.seed if cfg.search.seed is None else cfg.search.seed
    random.seed(seed)  # PBT's explore draws from Python's random module
    np.random.seed(seed % 2**32)
    uri = mlflow_uri(cfg, run_dir.parent)
    sampled = (
        []
        if SearchAlgorithm(cfg.search.algorithm) == SearchAlgorithm.none
        else list(cfg.search.bounds)
    )
    trainable = tune.with_resources(member_trainable, member_resources(cfg))
    callbacks = [
        EsperMLflowCallback(uri, run_dir.name, run_tags(cfg, run_dir)),
        SweepProgress(console, sampled, cfg.policy.training.iterations),
    ]
    experiment = run_dir / TUNE_DIR
    if resume:
        tuner = tune.Tuner.restore(
            str(experiment), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg, str(run_dir)),
            tune_config=tune.TuneConfig(
                metric=cfg.search.metric,
                mode=cfg.search.mode,
                num_samples=cfg.search.num_samples,
                scheduler=scheduler(cfg),
                search_alg=search_algorithm(cfg),
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(run_dir),
                callbacks=callbacks,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=2),
            ),
        )
    grid = tuner.fit()
    members = []
    failed = []
    for i in range(len(grid)):
        result = grid[i]
        if result.error is not None:
            lines = str(result.error).strip().splitlines() or [type(result.error).__name__]
            failed.append((Path(result.path).name, lines[-1]))
        if result.metrics is None:
            continue
        members.append(
            {
                "trial": result.metrics.get("member", ""),
                **{k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
                **sampled_values(result.config or {}),
            }
        )
    best = _best(members, cfg.search.metric, cfg.search.mode)
    return SweepResult(run_dir, members, best, uri, failed)
