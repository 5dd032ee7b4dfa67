"""A replica: living networks under their own drift, acting with copies of the policy.

A replica hosts one organism, or a cohort of ``policy.training.cohort`` organisms trained as
one batched network (:class:`esper.workloads.cohort.Cohort`); each organism ("member") has its
own seed, stream, policy copy and event-log partition.

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

With ``search.reference`` set, every organism has a reference twin
(:class:`esper.policies.reference.ReferenceTwins`) that rolls the same number of surgeries on the
same batches; each episode's metrics gain ``reference_accuracy`` and ``relative_accuracy``, the
measure PBT's fitness is made of. Twins write nothing to the event log; they are saved in the
restart checkpoint with their organisms.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray

from esper import allocator
from esper.checkpoint import load_first_sound, previous_path, save_checkpoint
from esper.conf import from_plain
from esper.events.paths import part_dir, truncate_partition
from esper.events.record import SurgicalEvent
from esper.files import atomic_write_text
from esper.platform.recorder import ReplicaRecorder
from esper.policies.base import make_policy
from esper.policies.central import load_acting_state
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.reference import ReferenceTwins, reference_metrics
from esper.policies.rollout import Episode, cohort_rollout, rollout
from esper.seeding import derive_seed, small_seed
from esper.threads import one_thread
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ReplicaSpec", "ReplicaWorker", "replica_actor"]

_KIND = "replica"
_TABLES = ("events", "metrics")
_REBUILD_SPACE = 1 << 20
"""Replica ids of organisms rebuilt after divergence: ``N + [0, 2²⁰)`` (``N`` organisms of the
member: replicas × cohort)."""


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica actor is built from (plain and picklable).

    Attributes:
        run_dir: The run directory (with its ``run.json``).
        trial_id: Population member.
        replica_id: Replica actor within the member; its organisms are replicas
            ``replica_id × cohort + i`` (their seeds and event-log partitions).
        replicas: Replica actors of the member (rebuilt organisms get ids above every
            organism's).
        config: The replica's composed config as plain data (:func:`esper.config.to_plain`),
            its workload already chosen.
        restart_path: Where the replica keeps its restart checkpoint.
        fresh: The member starts from nothing (no checkpoint will be loaded): rows an earlier
            run of the same member left in this replica's partition are removed.
        slot: A file where the actor keeps the spec it serves now (re-targeted actors serve
            other members than they were created for): a restarted actor (Ray re-runs
            ``__init__`` with the creation arguments) reads it and rebuilds that member.
    """

    run_dir: str
    trial_id: str
    replica_id: int
    replicas: int
    config: dict[str, Any]
    restart_path: str
    fresh: bool = True
    slot: str = ""

    @property
    def cohort(self) -> int:
        """Organisms hosted by the replica (``policy.training.cohort``)."""
        return int(self.config["policy"]["training"]["cohort"])

    @property
    def member_ids(self) -> list[int]:
        """Replica ids of the organisms hosted here."""
        return [self.replica_id * self.cohort + i for i in range(self.cohort)]


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class ReplicaWorker:
    """Organisms (one, or a cohort) and a copy of the Emrakul policy for each.

    Args:
        spec: What to build; if ``spec.restart_path`` exists, the replica resumes from it.
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        allocator.from_environment()  # ESPER_KEEP_FREED_MEMORY=1: readings reuse their pages
        if spec.slot and Path(spec.slot).is_file():  # restarted: serve the current member
            spec = ReplicaSpec(**json.loads(Path(spec.slot).read_text(encoding="utf-8")))
        self.spec = spec
        self.cfg = from_plain(spec.config)
        self.node_id = _node_id()
        self.rebuilds = 0
        self.ids = spec.member_ids  # current replica id of each organism (rebuilds change it)
        seed = self.cfg.experiment.seed
        params = dict(self.cfg.policy.params) if self.cfg.policy.name == "emrakul" else {}
        self.policies: list[EmrakulPolicy] = []
        for rid in self.ids:
            policy = make_policy(
                "emrakul", **{**params, "seed": small_seed(seed, "replica-policy", rid)}
            )
            assert isinstance(policy, EmrakulPolicy)
            self.policies.append(policy)
        self._acting_seeds = [small_seed(seed, "replica-acting", rid) for rid in self.ids]
        with one_thread():
            self.organisms = [self._build(rid) for rid in self.ids]
            self.steps = [o.reset() for o in self.organisms]
            self.twins = self._twins()
        self.cohort = Cohort(self.organisms) if spec.cohort > 1 else None
        self._restored_to: list[int | None] = [None] * len(self.ids)  # see _quarantine
        restart = [Path(spec.restart_path), previous_path(spec.restart_path)]
        resume = any(Path(p).exists() for p in restart)
        if spec.fresh and not resume:
            for rid in spec.member_ids:
                self._truncate(rid, {table: 0 for table in _TABLES})
        self.recorders = [self._recorder(rid) for rid in spec.member_ids]
        self._unrecorded_first = True  # the first readings are recorded by the first rollout
        if resume:
            state, used, refused = load_first_sound(restart, _KIND)
            self.load_state_dict(state, same_trial=True)
            if refused:  # the latest was damaged: say so in every member's log
                self._record_restore(used, refused)

    def _build(self, replica_id: int) -> Organism:
        s = self.spec
        return build_organism(
            self.cfg, replica_id, run_id=Path(s.run_dir).name, trial_id=s.trial_id
        )

    def _twins(self) -> ReferenceTwins | None:
        """The organisms' twins: the fitness's reference (``search.reference``) and the
        rewards' control (``policy.training.control``), one surgeon for both (composition
        refuses two); ``None`` when both are ``none``."""
        reference, seed = self.cfg.search.reference, self.cfg.experiment.seed
        surgeon = reference if reference != "none" else self.cfg.policy.training.control
        if surgeon == "none":
            return None
        return ReferenceTwins(surgeon, self._build, self.ids, seed, self.spec.cohort > 1)

    def _recorder(self, partition: int) -> ReplicaRecorder:
        s = self.spec
        return ReplicaRecorder(Path(s.run_dir), "emrakul", s.trial_id, partition, self.node_id)

    def dims(self) -> tuple[int, int]:
        """Widths of a Specialist's observation and of the global state."""
        step, names = self.steps[0], self.organisms[0].scalpel.names
        return step.observations[names[0]].width, step.global_state.width

    def rollout(self, acting: Mapping[str, Any], length: int) -> list[Episode]:
        """One episode of ``length`` surgeries per organism with the learner's weights
        ``acting``.

        Call :meth:`checkpoint` after it: until then a restart rolls the replica back to before
        the episode (its rows are dropped with it)."""
        for policy, seed in zip(self.policies, self._acting_seeds, strict=True):
            load_acting_state(policy, acting, seed)
        version = self.policies[0].policy_version
        if self._unrecorded_first:
            for i, recorder in enumerate(self.recorders):
                recorder.record(self.organisms[i], self.steps[i], version)
            self._unrecorded_first = False

        def record(i: int, step: OrganismStep) -> None:
            self.recorders[i].record(self.organisms[i], step, version)

        with one_thread():
            # Under a control the twins go first: their accuracies are the rewards' controls
            # (a twin never depends on its organism, so the order changes nothing else).
            training = self.cfg.policy.training
            twins, credits = None, None
            if training.control != "none" and self.twins is not None:
                twins, credits = self.twins.rollout_credits(length, self.steps, training.credit)
            if self.cohort is None:
                results = [rollout(self.organisms[0], self.steps[0], self.policies[0], length,
                                   lambda step: record(0, step),
                                   None if credits is None else credits[0])]  # fmt: skip
            else:
                results = cohort_rollout(self.cohort, self.steps, self.policies, length, record,
                                         credits)  # fmt: skip
            if twins is None and self.twins is not None:
                twins = self.twins.rollout(length)
            episodes = []
            for i, (episode, step) in enumerate(results):
                self.steps[i] = step
                twin = None if twins is None else twins[i]
                episode.metrics.update(replica_id=self.ids[i], node_id=self.node_id,
                                       **reference_metrics(episode.accuracies, twin))  # fmt: skip
                episodes.append(episode)
                if episode.metrics["diverged"] or (twin is not None and twin.diverged):
                    self._quarantine(i, twin_only=not episode.metrics["diverged"])
                else:
                    self._restored_to[i] = None
        return episodes

    def checkpoint(self) -> None:
        """Save the restart checkpoint: the state a restarted replica continues from, with the
        event-log marks it rolls its partitions back to. The one it replaces is kept: a
        restart falls back on it if the new one is found damaged."""
        save_checkpoint(self.spec.restart_path, _KIND, self.state_dict(), keep_previous=True)

    def _platform_event(
        self, i: int, action: str, count: int, value: float, detail: dict[str, Any]
    ) -> None:
        organism, step = self.organisms[i], self.steps[i]
        event = SurgicalEvent(
            run_id="", trial_id="", replica_id=0, drift=organism.stream.drift_name,
            task_index=int(step.info["task_index"]), sgd_step=organism.sgd_step,
            surgery_step=organism.surgery_step, layer="", action=action, count=count,
            value=value, wall_time=time.time(), detail=json.dumps(detail),
        )  # fmt: skip
        self.recorders[i].events([event], self.policies[i].policy_version)

    def _record_restore(self, used: Path, refused: list[str]) -> None:
        for i in range(len(self.organisms)):
            self._platform_event(i, "restore", len(refused), float("nan"),
                                 {"checkpoint": used.name, "refused": refused})  # fmt: skip

    def _quarantine(self, i: int, twin_only: bool = False) -> None:
        """A diverged organism is set aside. It continues from its last healthy state, the
        restart checkpoint, with its partition rolled back to that checkpoint's marks (the
        diverged stretch is dropped; the ``quarantine`` event names it). Without such a state
        (it diverged in its first episode, or again from the same checkpoint) it is replaced
        by a new organism instead (:meth:`_rebuild`). Its reference twin goes with it, so the
        two stay on the same steps; a diverged twin (``twin_only``) takes its organism along
        (the event's ``detail`` says ``"twin": true``)."""
        diverged_at = self.organisms[i].surgery_step
        paths = [Path(self.spec.restart_path), previous_path(self.spec.restart_path)]
        try:
            state, used, _ = load_first_sound(paths, _KIND)
        except (FileNotFoundError, ValueError):
            state = None
        if (
            state is None
            or int(state["organism_ids"][i]) != self.ids[i]  # the state is an earlier organism's
            or self._restored_to[i] == int(state["organisms"][i]["surgery_step"])  # again
        ):
            self._rebuild(i)
            return
        to = int(state["organisms"][i]["surgery_step"])
        self.organisms[i].load_state_dict(state["organisms"][i])
        self.policies[i].load_state_dict(state["policies"][i])
        if self.cohort is not None:
            self.cohort.replace(i, self.organisms[i])
        self.steps[i] = self.organisms[i].current()
        if self.twins is not None:
            self.twins.load_one(i, state["references"])
        partition = self.spec.member_ids[i]
        self.recorders[i].close()
        self._truncate(partition, state["marks"][i])
        self.recorders[i] = self._recorder(partition)
        self._restored_to[i] = to
        detail: dict[str, Any] = {"diverged_at": diverged_at, "restored_to": to,
                                  "checkpoint": used.name}  # fmt: skip
        if twin_only:
            detail["twin"] = True
        self._platform_event(i, "quarantine", diverged_at - to, float(to), detail)

    def _rebuild(self, i: int) -> None:
        """A diverged organism is quarantined (an event says so) and replaced by a new one."""
        self.rebuilds += 1
        s = self.spec
        offset = derive_seed(self.cfg.experiment.seed, "rebuild", s.replica_id,
                             self.rebuilds) % _REBUILD_SPACE  # fmt: skip
        new_id = s.replicas * s.cohort + offset
        self._platform_event(i, "quarantine", 0, float(new_id), {"rebuilt_as": new_id})
        self._restored_to[i] = None
        version = self.policies[i].policy_version
        self.ids[i] = new_id
        self.organisms[i] = self._build(new_id)
        self.steps[i] = self.organisms[i].reset()
        if self.cohort is not None:
            self.cohort.replace(i, self.organisms[i])
        if self.twins is not None:
            self.twins.rebuild(i, new_id)
        self.recorders[i].record(self.organisms[i], self.steps[i], version)

    def record_events(self, events: list[SurgicalEvent]) -> None:
        """Record platform events (an ``exploit``) in every organism's partition."""
        for recorder, policy in zip(self.recorders, self.policies, strict=True):
            recorder.events(events, policy.policy_version)

    def state_dict(self) -> dict[str, Any]:
        """Every organism and policy copy (its episode state and sampling stream), the
        reference twins, the rebuild count and the event-log marks (the parts that hold every
        row so far)."""
        return {
            "organisms": [o.state_dict() for o in self.organisms],
            "references": None if self.twins is None else self.twins.state_dict(),
            "policies": [p.state_dict() for p in self.policies],
            "rebuilds": self.rebuilds,
            "organism_ids": list(self.ids),
            "trial_id": self.spec.trial_id,
            "marks": [r.mark() for r in self.recorders],
        }

    def load_state_dict(self, state: Mapping[str, Any], same_trial: bool) -> None:
        """Continue from ``state``. Restoring this member's own checkpoint (``same_trial``)
        rolls the event-log partitions back to the checkpoint's marks; adopting another
        member's state (a PBT exploit) keeps this member's history."""
        if len(state["organisms"]) != len(self.organisms):
            raise ValueError(
                f"the state holds {len(state['organisms'])} organisms, this replica "
                f"{len(self.organisms)} (policy.training.cohort differs)"
            )
        self.rebuilds = int(state["rebuilds"])
        for i, (rid, organism_state, policy_state) in enumerate(
            zip(state["organism_ids"], state["organisms"], state["policies"], strict=True)
        ):
            if int(rid) != self.ids[i]:  # the state is a rebuilt organism's
                self.ids[i] = int(rid)
                self.organisms[i] = self._build(int(rid))
                if self.cohort is not None:
                    self.cohort.replace(i, self.organisms[i])
            self.organisms[i].load_state_dict(organism_state)
            self.policies[i].load_state_dict(policy_state)
            self.steps[i] = self.organisms[i].current()
        if self.twins is not None:
            if state.get("references") is None:  # saved with search.reference=none
                raise ValueError(
                    "the state has no reference twins but this replica runs them "
                    f"(search.reference={self.twins.policy_name!r})"
                )
            self.twins.load_state_dict(state["references"])
        self._unrecorded_first = False  # the state's history holds it
        if same_trial:
            for i, partition in enumerate(self.spec.member_ids):
                self.recorders[i].close()
                self._truncate(partition, state["marks"][i])
                self.recorders[i] = self._recorder(partition)

    def _truncate(self, partition: int, marks: Mapping[str, int]) -> None:
        s = self.spec
        for table in _TABLES:
            truncate_partition(part_dir(s.run_dir, table, s.trial_id, partition), marks[table])

    def close(self) -> None:
        """Flush and close the event writers (each writes its manifest)."""
        for recorder in self.recorders:
            recorder.close()

    def retarget(self, spec: ReplicaSpec) -> None:
        """Serve another member (or this one again after a pause) in the same process: the
        writers are closed, the spec is kept in its slot (for a restart), and the replica is
        rebuilt from ``spec``."""
        self.close()
        if spec.slot:
            atomic_write_text(Path(spec.slot), json.dumps(asdict(spec)))
        self.__init__(spec)  # type: ignore[misc]

    def start_fresh(self) -> None:
        """Remove every row this replica's partitions hold (a member starting from nothing
        after an earlier attempt of it left rows)."""
        for i, partition in enumerate(self.spec.member_ids):
            self.recorders[i].close()
            self._truncate(partition, {table: 0 for table in _TABLES})
            self.recorders[i] = self._recorder(partition)

    def pid(self) -> int:
        """The process id (tests kill it)."""
        return os.getpid()


def replica_actor(num_cpus: float, num_gpus: float, max_restarts: int) -> Any:
    """:class:`ReplicaWorker` as a Ray actor class with these resources; a crashed actor is
    restarted up to ``max_restarts`` times and its interrupted call retried."""
    return ray.remote(ReplicaWorker).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_task_retries=-1
    )
