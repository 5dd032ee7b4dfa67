"""Running populations: ``esper run`` (one member, no Tune) and ``esper sweep`` (Tune).

Both start Ray (embedded on this machine, or joining ``--address``), create the run directory
(``run.json``, ``config.yaml``; the members' event logs go under it, Tune's experiment under
``RUN/tune``, replicas' restart checkpoints under ``RUN/state``) and use the same
:class:`~esper.platform.population.Population`. A sweep is a Tune experiment over
:class:`~esper.platform.trainable.MemberTrainable`, tracked in MLflow from the driver, and can be
resumed from its run directory after an interruption (``esper sweep --resume RUN``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from rich.console import Console

from esper.checkpoint import save_checkpoint
from esper.config import EsperConfig, SearchAlgorithm
from esper.platform.population import Population
from esper.platform.progress import SweepProgress
from esper.platform.search import param_space, scheduler, search_algorithm
from esper.platform.tracking import (
    EsperMLflowCallback,
    artifact_root,
    mlflow_uri,
    prepare_experiment,
    run_tags,
)
from esper.platform.trainable import KIND, MemberTrainable, sampled_values

__all__ = [
    "TUNE_DIR",
    "SweepResult",
    "collect",
    "member_resources",
    "run_config",
    "run_member",
    "run_sweep",
    "trainable",
]

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


def run_config(cfg: EsperConfig, run_dir: Path, console: Console) -> tune.RunConfig:
    """Where Tune keeps the experiment, the driver's callbacks (MLflow, progress), when a
    member stops and when it is checkpointed."""
    sampled = (
        []
        if SearchAlgorithm(cfg.search.algorithm) == SearchAlgorithm.none
        else list(cfg.search.bounds)
    )
    uri = mlflow_uri(cfg, run_dir.parent)
    prepare_experiment(uri, run_dir.name, artifact_root(cfg, run_dir.parent))
    return tune.RunConfig(
        name=TUNE_DIR,
        storage_path=str(run_dir),
        callbacks=[
            EsperMLflowCallback(uri, run_dir.name, run_tags(cfg, run_dir)),
            SweepProgress(console, sampled, cfg.policy.training.iterations),
        ],
        verbose=0,
        # The last iteration ends the member before the scheduler sees it: no exploit copies
        # a state (and a last result) that no iteration would use.
        stop={"training_iteration": cfg.policy.training.iterations},
        checkpoint_config=tune.CheckpointConfig(
            checkpoint_frequency=cfg.search.perturbation_interval, checkpoint_at_end=True
        ),
        failure_config=tune.FailureConfig(max_failures=2),
    )


def trainable(cfg: EsperConfig) -> Any:
    """:class:`MemberTrainable` with a member's resources (:func:`member_resources`)."""
    return tune.with_resources(MemberTrainable, member_resources(cfg))


def run_sweep(cfg: EsperConfig, run_dir: Path, console: Console, resume: bool) -> SweepResult:
    """The population search of ``cfg.search`` over members (see the module docstring)."""
    seed = cfg.experiment.seed if cfg.search.seed is None else cfg.search.seed
    random.seed(seed)  # PBT's explore draws from Python's random module
    np.random.seed(seed % 2**32)
    experiment = run_dir / TUNE_DIR
    if resume:
        tuner = tune.Tuner.restore(
            str(experiment), trainable(cfg), resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable(cfg),
            param_space=param_space(cfg, str(run_dir)),
            tune_config=tune.TuneConfig(
                metric=cfg.search.metric,
                mode=cfg.search.mode,
                num_samples=cfg.search.num_samples,
                scheduler=scheduler(cfg),
                search_alg=search_algorithm(cfg),
                reuse_actors=True,  # a paused member's processes serve the next trial
            ),
            run_config=run_config(cfg, run_dir, console),
        )
    return collect(cfg, run_dir, tuner.fit())


def collect(cfg: EsperConfig, run_dir: Path, grid: Any) -> SweepResult:
    """Each member's last result (once, by Tune's trial id), the best, the failures."""
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
                "trial": result.metrics.get("trial_id", ""),
                **{k: v for k, v in result.metrics.items() if isinstance(v, int | float)},
                **sampled_values(result.config or {}),
            }
        )
    best = _best(members, cfg.search.metric, cfg.search.mode)
    return SweepResult(run_dir, members, best, mlflow_uri(cfg, run_dir.parent), failed)
