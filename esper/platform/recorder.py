"""Recording organisms into a run directory: their surgical events and per-surgery metrics.

A replica's :class:`ReplicaRecorder` owns one crash-safe
:class:`~esper.events.writer.EventWriter` per table (``events``, ``metrics``) under
``RUN/<table>/trial=T/replica=R/`` and turns each organism step into rows: the step's events,
stamped with the run, trial, replica and policy version, and one metrics row. The run directory
itself (its name, ``run.json``, its end state) belongs to :mod:`esper.platform.runs`; a
:class:`RunRecorder` creates it first when it records the run's first replica.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from esper.config import EsperConfig
from esper.events.record import SurgicalEvent
from esper.events.writer import EventWriter, EventWriterConfig
from esper.platform.runs import create_run
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ReplicaRecorder", "RunRecorder"]


class ReplicaRecorder:
    """Records one replica's surgical events and per-surgery metrics in an existing run.

    Args:
        run_dir: The run directory (with its ``run.json``).
        policy: Name of the acting policy.
        trial_id: Population member (``t0`` outside sweeps).
        replica_id: Replica within the trial.
        node_id: The Ray node the replica runs on (``""`` outside Ray).
    """

    def __init__(
        self,
        run_dir: Path,
        policy: str,
        trial_id: str = "t0",
        replica_id: int = 0,
        node_id: str = "",
    ) -> None:
        if not (run_dir / "run.json").exists():
            raise FileNotFoundError(f"{run_dir} has no run.json: create the run first")
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.trial_id = trial_id
        self.replica_id = replica_id
        self.policy = policy
        self.node_id = node_id
        self.writers = {
            table: EventWriter(EventWriterConfig(str(run_dir), trial_id, replica_id, table))
            for table in ("events", "metrics")
        }

    def events(self, events: list[SurgicalEvent], policy_version: int = 0) -> None:
        """Record surgical events (their run, trial and policy version are set here)."""
        for event in events:
            event.run_id = self.run_id
            event.trial_id = self.trial_id
            event.replica_id = self.replica_id
            event.policy_version = policy_version
        self.writers["events"].write(events)

    def step(self, organism: Organism, step: OrganismStep, policy_version: int = 0) -> None:
        """Record one surgery step's metrics row."""
        comps = (
            asdict(step.components)
            if step.components is not None
            else dict.fromkeys(("accuracy", "flops", "oscillation", "gsnr", "spike"), float("nan"))
        )
        active = sum(int(organism.scalpel.mask(n).sum()) for n in organism.scalpel.names)
        self.writers["metrics"].write(
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
                    "policy_version": policy_version,
                    "node_id": self.node_id,
                    "wall_time": time.time(),
                }
            ]
        )

    def record(self, organism: Organism, step: OrganismStep, policy_version: int = 0) -> None:
        """Record a step's events and its metrics row."""
        self.events(step.events, policy_version)
        self.step(organism, step, policy_version)

    def mark(self) -> dict[str, int]:
        """Flush both tables; the part numbers a restore from this moment keeps (see
        :func:`esper.events.paths.truncate_partition`)."""
        return {table: writer.mark() for table, writer in self.writers.items()}

    def close(self) -> None:
        """Flush and close both writers."""
        for writer in self.writers.values():
            writer.close()

    def __enter__(self) -> ReplicaRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunRecorder(ReplicaRecorder):
    """A :class:`ReplicaRecorder` that can also create its run (the first replica's).

    Args:
        run_dir: The run directory.
        cfg: The composed config (saved as ``config.yaml`` and in ``run.json``).
        command: The command that made the run (``evaluate``, ``train-policy``).
        workload: The workload label (:func:`~esper.platform.runs.workload_label`).
        policy: Name of the policy acting.
        trial_id: Population member (``t0`` outside sweeps).
        replica_id: Replica within the trial.
        create: Create the directory with :func:`~esper.platform.runs.create_run` (the first
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
            create_run(run_dir, cfg, command, workload, policy)
        super().__init__(run_dir, policy, trial_id, replica_id)
