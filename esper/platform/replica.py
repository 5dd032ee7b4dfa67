"""A replica: one living network under its own drift, acting with a copy of the policy.

:class:`ReplicaWorker` is plain Python (tests and ``esper run`` can use it in process);
:func:`replica_actor` makes it a Ray actor with the cluster's resources and restart budget.
Each rollout starts from the learner's broadcast weights (one ``ray.put`` per update), acts on
local observations only (decentralized execution), records its events and metrics in its own
partition of the run (``trial=T/replica=R``). After each rollout the caller asks for a restart
checkpoint (:meth:`ReplicaWorker.checkpoint`, a separate actor call, so that it is written while
the learner updates instead of before the episode comes back): when Ray restarts a crashed
replica (which re-runs ``__init__`` but restores no state), the replica reloads that checkpoint
and rolls its event-log partition back to it, so the retried calls write no row twice and lose
none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from esper.checkpoint import load_checkpoint, save_checkpoint
from esper.conf import from_plain
from esper.events.paths import part_dir, truncate_partition
from esper.events.record import SurgicalEvent
from esper.platform.runs import ReplicaRecorder
from esper.policies.base import make_policy
from esper.policies.central import load_acting_state
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.rollout import Episode, rollout
from esper.seeding import derive_seed, small_seed
from esper.threads import one_thread
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ReplicaSpec", "ReplicaWorker", "replica_actor"]

_KIND = "replica"
_TABLES = ("events", "metrics")
_REBUILD_SPACE = 1 << 20
"""Replica ids of organisms rebuilt after divergence: ``R + [0, 2²⁰)`` (``R`` replicas)."""


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica actor is built from (plain and picklable).

    Attributes:
        run_dir: The run directory (with its ``run.json``).
        trial_id: Population member.
        replica_id: Replica within the member (its seed and its event-log partition).
        replicas: Replicas of the member (rebuilt organisms get ids above them).
        config: The replica's composed config as plain data (:func:`esper.config.to_plain`),
            its workload already chosen.
        restart_path: Where the replica keeps its restart checkpoint.
        fresh: The member starts from nothing (no checkpoint will be loaded): rows an earlier
            run of the same member left in this replica's partition are removed.
    """

    run_dir: str
    trial_id: str
    replica_id: int
    replicas: int
    config: dict[str, Any]
    restart_path: str
    fresh: bool = True


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class ReplicaWorker:
    """One organism and its copy of the Emrakul policy.

    Args:
        spec: What to build; if ``spec.restart_path`` exists, the replica resumes from it.
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self.cfg = from_plain(spec.config)
        self.node_id = _node_id()
        self.rebuilds = 0
        self.organism_id = spec.replica_id
        seed = self.cfg.experiment.seed
        params = dict(self.cfg.policy.params) if self.cfg.policy.name == "emrakul" else {}
        params["seed"] = small_seed(seed, "replica-policy", spec.replica_id)
        policy = make_policy("emrakul", **params)
        assert isinstance(policy, EmrakulPolicy)
        self.policy = policy
        self._acting_seed = small_seed(seed, "replica-acting", spec.replica_id)
        with one_thread():
            self.organism = self._build(spec.replica_id)
            self.step = self.organism.reset()
        restart = Path(spec.restart_path).exists()
        if spec.fresh and not restart:
            self._truncate({table: 0 for table in _TABLES})
        self.recorder = self._recorder()
        self._unrecorded_first = True  # the first reading is recorded by the first rollout
        if restart:
            self.load_state_dict(load_checkpoint(spec.restart_path, _KIND), same_trial=True)

    def _build(self, replica_id: int) -> Organism:
        s = self.spec
        return build_organism(
            self.cfg, replica_id, run_id=Path(s.run_dir).name, trial_id=s.trial_id
        )

    def _recorder(self) -> ReplicaRecorder:
        s = self.spec
        return ReplicaRecorder(Path(s.run_dir), "emrakul", s.trial_id, s.replica_id, self.node_id)

    def dims(self) -> tuple[int, int]:
        """Widths of a Specialist's observation and of the global state."""
        names = self.organism.scalpel.names
        return self.step.observations[names[0]].width, self.step.global_state.width

    def rollout(self, acting: Mapping[str, Any], length: int) -> Episode:
        """One episode of ``length`` surgeries with the learner's weights ``acting``.

        Call :meth:`checkpoint` after it: until then a restart rolls the replica back to before
        the episode (its rows are dropped with it)."""
        load_acting_state(self.policy, acting, self._acting_seed)
        version = self.policy.policy_version
        if self._unrecorded_first:
            self.recorder.record(self.organism, self.step, version)
            self._unrecorded_first = False

        def record(step: OrganismStep) -> None:
            self.recorder.record(self.organism, step, version)

        with one_thread():
            episode, self.step = rollout(self.organism, self.step, self.policy, length, record)
            if episode.metrics["diverged"]:
                self._rebuild()
        episode.metrics.update(replica_id=self.spec.replica_id, node_id=self.node_id)
        return episode

    def checkpoint(self) -> None:
        """Save the restart checkpoint: the state a restarted replica continues from, with the
        event-log marks it rolls its partition back to."""
        save_checkpoint(self.spec.restart_path, _KIND, self.state_dict())

    def _rebuild(self) -> None:
        """A diverged organism is quarantined (an event says so) and replaced by a new one."""
        self.rebuilds += 1
        offset = derive_seed(self.cfg.experiment.seed, "rebuild", self.spec.replica_id,
                             self.rebuilds) % _REBUILD_SPACE  # fmt: skip
        event = SurgicalEvent(
            run_id="", trial_id="", replica_id=0, drift=self.organism.stream.drift_name,
            task_index=int(self.step.info["task_index"]), sgd_step=self.organism.sgd_step,
            surgery_step=self.organism.surgery_step, layer="", action="quarantine", count=0,
            value=float(self.spec.replicas + offset),
            detail=f'{{"rebuilt_as": {self.spec.replicas + offset}}}',
        )  # fmt: skip
        self.recorder.events([event], self.policy.policy_version)
        self.organism = self._build(self.spec.replicas + offset)
        self.step = self.organism.reset()
        self.recorder.record(self.organism, self.step, self.policy.policy_version)

    def record_events(self, events: list[SurgicalEvent]) -> None:
        """Record platform events (an ``exploit``) in this replica's partition."""
        self.recorder.events(events, self.policy.policy_version)

    def state_dict(self) -> dict[str, Any]:
        """The organism, the policy copy (its episode state and sampling stream), the rebuild
        count and the event-log marks (the parts that hold every row so far)."""
        return {
            "organism": self.organism.state_dict(),
            "policy": self.policy.state_dict(),
            "rebuilds": self.rebuilds,
            "organism_id": self.organism_id,
            "trial_id": self.spec.trial_id,
            "marks": self.recorder.mark(),
        }

    def load_state_dict(self, state: Mapping[str, Any], same_trial: bool) -> None:
        """Continue from ``state``. Restoring this member's own checkpoint (``same_trial``)
        rolls the event-log partition back to the checkpoint's marks; adopting another
        member's state (a PBT exploit) keeps this member's history."""
        self.rebuilds = int(state["rebuilds"])
        if int(state["organism_id"]) != self.organism_id:  # the state is a rebuilt organism's
            self.organism = self._build(int(state["organism_id"]))
        self.organism.load_state_dict(state["organism"])
        self.policy.load_state_dict(state["policy"])
        self.step = self.organism.current()
        self._unrecorded_first = False  # the state's history holds it
        if same_trial:
            self.recorder.close()
            self._truncate(state["marks"])
            self.recorder = self._recorder()

    def _truncate(self, marks: Mapping[str, int]) -> None:
        s = self.spec
        for table in _TABLES:
            truncate_partition(part_dir(s.run_dir, table, s.trial_id, s.replica_id), marks[table])

    def close(self) -> None:
        """Flush and close the event writers."""
        self.recorder.close()

    def pid(self) -> int:
        """The process id (tests kill it)."""
        return os.getpid()


def replica_actor(num_cpus: float, num_gpus: float, max_restarts: int) -> Any:
    """:class:`ReplicaWorker` as a Ray actor class with these resources; a crashed actor is
    restarted up to ``max_restarts`` times and its interrupted call retried."""
    return ray.remote(ReplicaWorker).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_task_retries=-1
    )
