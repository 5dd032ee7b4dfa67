"""Run directories: what a command leaves behind for analysis.

A run directory holds ``run.json`` (identity, command, workload, policy, seed, reward weights,
the composed config), ``config.yaml``, and the ``events`` and ``metrics`` tables written as
crash-safe Parquet parts by :class:`~esper.events.writer.EventWriter`
(``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet``). :class:`RunRecorder` creates it and
turns organism steps into rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from esper.config import EsperConfig
from esper.events.record import SurgicalEvent
from esper.events.writer import EventWriter, EventWriterConfig
from esper.files import atomic_write_text
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["RunRecorder", "new_run_dir"]


def new_run_dir(cfg: EsperConfig, kind: str, workload: str) -> Path:
    """``<storage>/<kind>-<workload>-<policy>-s<seed>-<UTC time>``, not yet created."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{kind}-{workload}-{cfg.policy.name}-s{cfg.experiment.seed}-{stamp}"
    return Path(cfg.cluster.storage_path).expanduser().resolve() / name


class RunRecorder:
    """Creates a run directory and records a replica's events and per-surgery metrics.

    Args:
        run_dir: The run directory (created; must not exist yet).
        cfg: The composed config (saved as ``config.yaml`` and in ``run.json``).
        command: The command that made the run (``evaluate``, ``train-policy``).
        workload: Name of the workload option.
        policy: Name of the policy acting.
        trial_id: Population member (``t0`` outside sweeps).
        replica_id: Replica within the trial.
        create: Create the directory and write ``run.json``/``config.yaml`` (the first
            replica's recorder); other replicas of the same run pass ``False``.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: EsperConfig,
        command: str,
        workload: str,
        policy: str,
        trial_id: str = "t0",
        replica_id: int = 0,
        create: bool = True,
    ) -> None:
        if create:
            run_dir.mkdir(parents=True, exist_ok=False)
        elif not (run_dir / "run.json").exists():
            raise FileNotFoundError(f"{run_dir} has no run.json: create the run first")
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.trial_id = trial_id
        self.replica_id = replica_id
        self.policy = policy
        container = OmegaConf.to_container(
            OmegaConf.structured(cfg), resolve=True, enum_to_str=True
        )
        meta: dict[str, Any] = {
            "run_id": self.run_id,
            "command": command,
            "workload": workload,
            "policy": policy,
            "seed": cfg.experiment.seed,
            "reward": asdict(cfg.reward),
            "density": cfg.policy.density,
            "config": container,
        }
        if create:
            atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2, default=str))
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        self._events = EventWriter(EventWriterConfig(str(run_dir), trial_id, replica_id, "events"))
        self._metrics = EventWriter(
            EventWriterConfig(str(run_dir), trial_id, replica_id, "metrics")
        )

    def events(self, events: list[SurgicalEvent]) -> None:
        """Record surgical events (their run and trial identity is set here)."""
        for event in events:
            event.run_id = self.run_id
            event.trial_id = self.trial_id
            event.replica_id = self.replica_id
        self._events.write(events)

    def step(self, organism: Organism, step: OrganismStep) -> None:
        """Record one surgery step's metrics row."""
        comps = (
            asdict(step.components)
            if step.components is not None
            else dict.fromkeys(("accuracy", "flops", "oscillation", "gsnr", "spike"), float("nan"))
        )
        active = sum(int(organism.scalpel.mask(n).sum()) for n in organism.scalpel.names)
        self._metrics.write(
            [
                {
                    "run_id": self.run_id,
                    "trial_id": self.trial_id,
                    "replica_id": self.replica_id,
                    "policy": self.policy,
                    "drift": organism.stream.drift_name,
                    "task_index": int(step.info["task_index"]),
                    "sgd_step": int(step.info["sgd_step"]),
                    "surgery_step": int(step.info["surgery_step"]),
                    "online_accuracy": float(step.info["online_accuracy"]),
                    "online_loss": float(step.info["online_loss"]),
                    "density": float(step.info["density"]),
                    "active_params": active,
                    "novelty": float(step.info["novelty"]),
                    "reward": float(step.reward),
                    **{f"r_{k}": float(v) for k, v in comps.items()},
                    "wall_time": time.time(),
                }
            ]
        )

    def close(self) -> None:
        """Flush and close both writers."""
        self._events.close()
        self._metrics.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
