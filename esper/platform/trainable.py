"""The population member as a Ray Tune class trainable.

One trial = one member (:class:`~esper.platform.population.Population`): reward weights,
temperatures and learner settings from its config, its replicas, its learner. Every iteration
it reports the fitness with every reward component, density, FLOPs, oscillation, the policy
version and the values it ran with (``hp/<key>``). Tune checkpoints a member at perturbation
points only (PBT's pauses and exploits; ``search.perturbation_interval``), and a checkpoint is
the member's complete state, so PBT's exploit copies a member's real state.

Sweeps spend their time on organisms: Tune keeps a paused member's actor and hands it to the
next trial (``reuse_actors``); :meth:`MemberTrainable.reset_config` re-targets the member's
replica actors (their processes, imports and datasets stay) after closing their event writers,
so every writer of a sweep leaves its manifest. A member that continues another's state (an
exploit) keeps its own hyperparameters (the learners set their learning rates back after
loading Adam's state) and records an ``exploit`` event in each replica's partition, naming the
source trial and the values that changed; its next result names the source too, which the
MLflow callback turns into tags.
"""

from __future__ import annotations

import json
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
    "MemberTrainable",
    "load_member_checkpoint",
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


def load_member_checkpoint(directory: str | Path) -> tuple[dict[str, Any], Path, list[str]]:
    """The member state in Tune's checkpoint ``directory`` or, if that file is damaged, of the
    newest earlier checkpoint of the same trial that is sound (local storage keeps them all).

    Returns:
        The state, the file it came from, and why each newer file was refused.

    Raises:
        CheckpointError: no checkpoint of the trial is sound.
    """
    latest = Path(directory)
    older = sorted(
        (d for d in latest.parent.glob("checkpoint_*") if d.name < latest.name), reverse=True
    )
    candidates = [latest / CHECKPOINT_FILE, *(d / CHECKPOINT_FILE for d in older)]
    return load_first_sound(candidates, KIND)


EXPLOIT_SOURCE = "exploit_source"
"""Result key naming the trial whose state a member continued (first result after an
exploit); :class:`~esper.platform.tracking.EsperMLflowCallback` logs it as tags."""


class MemberTrainable(tune.Trainable):
    """One population member for Tune (see the module docstring)."""

    def setup(self, config: dict[str, Any]) -> None:
        """Build the member's replica actors and learner."""
        self._population: Population | None = None
        self._target(config)

    def _target(self, config: dict[str, Any]) -> None:
        cfg = from_plain(config[CONFIG_KEY], sampled_values(config))
        run_dir = Path(config[RUN_DIR_KEY])
        state_dir = run_dir / "state" / self.trial_id
        if self._population is None:
            self._population = Population(cfg, run_dir, self.trial_id, state_dir, fresh=False)
        else:
            self._population.retarget(cfg, self.trial_id, state_dir)
        self._started = False  # nothing loaded yet: a first step starts the member afresh
        self._exploit: dict[str, Any] | None = None

    @property
    def population(self) -> Population:
        """The member's replicas and learner."""
        assert self._population is not None, "setup() has not run"
        return self._population

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Serve another trial (or this one after a pause) with the same processes: the
        replicas' writers are closed (manifests written), then re-targeted."""
        self._target(new_config)
        return True

    def step(self) -> dict[str, Any]:
        """One iteration of the member."""
        population = self.population
        if not self._started:
            if population.iteration == 0:
                population.start_fresh()  # rows an earlier attempt of this trial left go
            self._started = True
        metrics = population.step()
        if self._exploit is not None:
            metrics[EXPLOIT_SOURCE] = self._exploit["source_trial"]
            self._exploit = None
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """The member's whole state as ``member.pt``."""
        save_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, KIND, self.population.state_dict())

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Continue from a checkpoint: this member's own, or another's after an exploit."""
        population = self.population
        state, used, refused = load_member_checkpoint(checkpoint)
        population.load_state_dict(state)
        # Tune set its iteration from the checkpoint it chose; a damaged one makes the member
        # fall back on an older file, and the member's own count is the one that holds (Tune
        # stops a member and times PBT by it).
        self._iteration = population.iteration
        self._started = True
        if state["trial_id"] != self.trial_id:
            event = _exploit_event(state, self.config, population.iteration)
            population.record([event])
            self._exploit = json.loads(event.detail)
        if refused:  # said in the log of every replica, and in the trial's output
            population.record([_restore_event(used, refused, population.iteration)])
            print(f"esper: {self.trial_id} resumed from {used}: {'; '.join(refused)}")

    def cleanup(self) -> None:
        """Close the replicas' event writers and end their actors."""
        if self._population is not None:
            self._population.close()
