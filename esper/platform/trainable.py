"""The population member as a Ray Tune function trainable.

One trial = one member (:class:`~esper.platform.population.Population`): reward weights,
temperatures and learner settings from its config, its replicas, its learner. Every iteration
it reports the fitness (online accuracy over its replicas at the density budget) with every
reward component, density, FLOPs, oscillation and the policy version; every
``search.perturbation_interval`` iterations (and at the end) the report carries a complete
checkpoint of the member, so PBT's exploit copies a member's real state. A trial started from
another member's checkpoint (an exploit) records an ``exploit`` event in each of its replicas'
partitions, naming the source trial and the values that changed.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from esper.checkpoint import load_first_sound, save_checkpoint
from esper.conf import from_plain
from esper.config import lookup
from esper.events.record import SurgicalEvent
from esper.platform.population import Population
from esper.platform.search import CONFIG_KEY, RUN_DIR_KEY

__all__ = [
    "CHECKPOINT_FILE",
    "KIND",
    "load_member_checkpoint",
    "member_trainable",
    "sampled_values",
]

KIND = "member"
"""Checkpoint kind of a population member."""

CHECKPOINT_FILE = "member.pt"
"""The file inside a Tune checkpoint directory."""


def sampled_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The values a trial's search sampled (every key but the composed config and run dir)."""
    return {k: v for k, v in config.items() if k not in (CONFIG_KEY, RUN_DIR_KEY)}


def _exploit_event(source: Mapping[str, Any], config: Mapping[str, Any], iteration: int) -> Any:
    changed = {}
    for key, value in sampled_values(config).items():
        before = lookup(source["config"], key)
        if before != value:
            changed[key] = [before, value]
    detail = json.dumps({"source_trial": source["trial_id"], "changed": changed}, default=str)
    return SurgicalEvent(
        run_id="", trial_id="", replica_id=0, drift="", task_index=0, sgd_step=0,
        surgery_step=iteration, layer="", action="exploit", count=len(changed),
        wall_time=time.time(), detail=detail,
    )  # fmt: skip


def _restore_event(used: Path, refused: list[str], iteration: int) -> SurgicalEvent:
    detail = json.dumps({"checkpoint": f"{used.parent.name}/{used.name}", "refused": refused})
    return SurgicalEvent(
        run_id="", trial_id="", replica_id=0, drift="", task_index=0, sgd_step=0,
        surgery_step=iteration, layer="", action="restore", count=len(refused),
        wall_time=time.time(), detail=detail,
    )  # fmt: skip


def load_member_checkpoint(checkpoint: tune.Checkpoint) -> tuple[dict[str, Any], Path, list[str]]:
    """The member state of Tune's latest ``checkpoint`` or, if that file is damaged, of the
    newest earlier checkpoint of the same trial that is sound (local storage keeps them all).

    Returns:
        The state, the file it came from, and why each newer file was refused.

    Raises:
        CheckpointError: no checkpoint of the trial is sound.
    """
    with checkpoint.as_directory() as directory:
        latest = Path(directory)
        trial_dir = Path(checkpoint.path).parent
        older = sorted(
            (d for d in trial_dir.glob("checkpoint_*") if d.name < Path(checkpoint.path).name),
            reverse=True,
        )
        candidates = [latest / CHECKPOINT_FILE, *(d / CHECKPOINT_FILE for d in older)]
        return load_first_sound(candidates, KIND)


def member_trainable(config: dict[str, Any]) -> None:
    """Run one member for ``policy.training.iterations`` iterations, reporting to Tune."""
    cfg = from_plain(config[CONFIG_KEY], sampled_values(config))
    run_dir = Path(config[RUN_DIR_KEY])
    trial_id = tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    state_dir = run_dir / "state" / trial_id
    population = Population(cfg, run_dir, trial_id, state_dir, fresh=checkpoint is None)
    try:
        if checkpoint is not None:
            state, used, refused = load_member_checkpoint(checkpoint)
            population.load_state_dict(state)
            if state["trial_id"] != trial_id:
                population.record([_exploit_event(state, config, population.iteration)])
            if refused:  # said in the log of every replica, and in the trial's output
                population.record([_restore_event(used, refused, population.iteration)])
                print(f"esper: {trial_id} resumed from {used}: {'; '.join(refused)}")
        interval = cfg.search.perturbation_interval
        total = cfg.policy.training.iterations
        while population.iteration < total:
            metrics = {**population.step(), "member": trial_id}
            if population.iteration % interval and population.iteration < total:
                tune.report(metrics)
                continue
            with tempfile.TemporaryDirectory() as directory:
                save_checkpoint(Path(directory) / CHECKPOINT_FILE, KIND, population.state_dict())
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
    finally:
        population.close()
