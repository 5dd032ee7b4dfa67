"""One population member: ``R`` replica actors and the central learner that trains them.

Every iteration the learner's weights are broadcast with one ``ray.put``; the replicas roll one
episode each (in parallel, on whatever nodes Ray placed them) and then save their restart
checkpoints while the learner updates from the episodes
(:class:`esper.policies.central.CentralLearner`). In the synchronous mode it waits for every
replica; in the asynchronous mode (``policy.training.asynchronous``) it learns from the
episodes that are ready (``ray.wait``), drops those acted on weights more than
``max_staleness`` updates old, and relaunches each finished replica at once, so it never waits
for the slowest replica.

The learner lives in the process that drives the member: the Tune trial's own actor under
``esper sweep``, the command's process under ``esper run``. With ``policy.training.imitation``
it starts, before the member's first iteration, from the same RigL-imitation warm start as the
in-process trainer (:func:`imitation_warm_start`), cloned on twins of the replicas'
organisms built here (the same configs and seeds as theirs; discarded after).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from esper.checkpoint import previous_path
from esper.conf import compose
from esper.config import EsperConfig, searched_values, to_plain
from esper.events.learning import record_iteration
from esper.events.record import SurgicalEvent
from esper.platform.fitness import Fitness
from esper.platform.replica import ReplicaSpec, replica_actor
from esper.policies.central import CentralLearner
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.imitation import warm_start
from esper.policies.rollout import COMPONENTS, Episode
from esper.policies.training import learner_policy
from esper.threads import one_thread
from esper.workloads.factory import build_organism

__all__ = ["Population", "imitation_warm_start", "replica_configs"]

_SUMMED = ("surgeries",)
_MEANS = ("online_accuracy", "episode_accuracy", "reference_accuracy", "relative_accuracy",
          "density", "mean_reward", *(f"r_{c}" for c in COMPONENTS))  # fmt: skip


def replica_configs(cfg: EsperConfig) -> list[EsperConfig]:
    """Replica ``r``'s config: the ``r``-th workload of ``policy.training.workloads`` (cycled;
    every other group as in ``cfg``), or ``cfg``'s own workload when that list is empty.

    A preset brings the replica's stream, host and optimizer; the Scalpel stays the member's
    (the mask mechanism and its temperature are what the member is, and what a search over
    ``workload.scalpel.*`` varies)."""
    t = cfg.policy.training
    if not t.workloads:
        return [cfg] * t.replicas
    presets = {w: compose([f"workload={w}"]).workload for w in dict.fromkeys(t.workloads)}
    return [
        dataclasses.replace(
            cfg,
            workload=dataclasses.replace(
                presets[t.workloads[r % len(t.workloads)]], scalpel=cfg.workload.scalpel
            ),
        )
        for r in range(t.replicas)
    ]


def imitation_warm_start(cfg: EsperConfig, policy: EmrakulPolicy) -> dict[str, Any]:
    """Behaviour-clone ``policy`` (built here if it is not) on ``policy.training.imitation``
    RigL surgeries of twins of every replica's organisms (replica ``r`` hosts organisms
    ``r × cohort + i``: the same configs and seeds), RigL's ``T_end`` set by the member's own
    budget of ``iterations × rollout`` surgeries per organism
    (:func:`esper.policies.imitation.warm_start`). The twins live on the CPU whatever
    ``experiment.device`` says (a Tune trial's learner holds no GPU), so the clone is the same
    wherever it is made: every member of a sweep starts from it. The twins are discarded after,
    so the replicas start RL on organisms that never ran RigL's surgeries (in process, RL
    continues on the organisms that did). Returns what it logs."""
    t = cfg.policy.training
    on_cpu = dataclasses.replace(cfg.experiment, device="cpu")
    configs = [dataclasses.replace(c, experiment=on_cpu) for c in replica_configs(cfg)]
    twins = [build_organism(c, r * t.cohort + i)
             for r, c in enumerate(configs) for i in range(t.cohort)]  # fmt: skip
    with one_thread():
        steps = [organism.reset() for organism in twins]
        if policy.specialist is None:
            first = twins[0].scalpel.names[0]
            policy.build(steps[0].observations[first].width, steps[0].global_state.width)
        return warm_start(policy, twins, steps, t.imitation, t.iterations * t.rollout,
                          cfg.experiment.seed)  # fmt: skip


class Population:
    """Replica actors and the central learner of one member.

    Args:
        cfg: The member's composed config.
        run_dir: The run directory (its ``run.json`` exists).
        trial_id: The member's id (its event-log partitions are ``trial=<trial_id>``).
        state_dir: Where replicas keep their restart checkpoints.
        fresh: The member starts from nothing (no checkpoint will be loaded), so rows an
            earlier run of the same member left in its partitions are removed.
    """

    def __init__(
        self, cfg: EsperConfig, run_dir: Path, trial_id: str, state_dir: Path, fresh: bool = True
    ) -> None:
        self.run_dir = run_dir
        self.replicas: list[Any] = []
        self._slots = run_dir / "state" / "actors" / uuid.uuid4().hex
        self._pending: dict[Any, tuple[int, int]] = {}  # async: future → (replica, version)
        self._saving: list[Any] = []  # restart checkpoints being written
        self.retarget(cfg, trial_id, state_dir, fresh)

    def retarget(
        self, cfg: EsperConfig, trial_id: str, state_dir: Path, fresh: bool = False
    ) -> None:
        """Become member ``trial_id`` with ``cfg``: the replica actors are created once and
        re-targeted after (their event writers closed first, manifests written; their
        processes, imports and datasets kept); the learner is built anew from ``cfg``."""
        self._settle()
        self.cfg, self.trial_id = cfg, trial_id
        self.iteration, self.dropped = 0, 0
        self.fitness = Fitness(cfg.search.fitness_window)
        c, t = cfg.cluster, cfg.policy.training
        state_dir.mkdir(parents=True, exist_ok=True)
        self._slots.mkdir(parents=True, exist_ok=True)
        specs = []
        for r, rcfg in enumerate(replica_configs(cfg)):
            restart = state_dir / f"replica-{r}.pt"
            for stale in (restart, previous_path(restart)):  # a new member starts fresh
                stale.unlink(missing_ok=True)
            slot = str(self._slots / f"{r}.json")
            specs.append(ReplicaSpec(str(self.run_dir), trial_id, r, t.replicas, to_plain(rcfg),
                                     str(restart), fresh, slot))  # fmt: skip
        if len(specs) == len(self.replicas):
            ray.get([a.retarget.remote(spec) for a, spec in zip(self.replicas, specs, strict=True)])
        else:
            self._end_actors()
            actor = replica_actor(c.replica_cpus, c.replica_gpus, c.max_restarts)
            self.replicas = [actor.remote(spec) for spec in specs]
        obs_dim, state_dim = ray.get(self.replicas[0].dims.remote())
        policy = learner_policy(cfg)
        policy.build(obs_dim, state_dim)
        self.learner = CentralLearner(policy, t, cfg.experiment.seed)
        self._warmed = False

    def _warm_start(self) -> dict[str, Any]:
        """The imitation warm start (:func:`imitation_warm_start`) once, before the member's
        first iteration; returns what it logs."""
        self._warmed = True
        if not self.cfg.policy.training.imitation:
            return {}
        logged = imitation_warm_start(self.cfg, self.learner.policy)
        return {k: logged[k] for k in ("imitation_samples", "bc_loss")}

    def start_fresh(self) -> None:
        """Remove the rows an earlier attempt of this member left in its partitions (a member
        that starts from nothing, not from a checkpoint)."""
        self._settle()
        ray.get([r.start_fresh.remote() for r in self.replicas])

    def _checkpoint(self, replicas: Sequence[Any]) -> None:
        """Ask ``replicas`` for their restart checkpoints after their queued rollouts (an
        actor runs one caller's calls in order); the previous ones are checked first, so a
        failed save is raised here rather than lost."""
        ray.get(self._saving)
        self._saving = [r.checkpoint.remote() for r in replicas]

    # -- iterations ------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """One learner update from the replicas' episodes; returns the iteration's metrics
        (also added to the run's learning curve, :mod:`esper.events.learning`); a fresh
        member's first one starts with the imitation warm start."""
        warm = self._warm_start() if self.iteration == 0 and not self._warmed else {}
        if self.cfg.policy.training.asynchronous:
            episodes = self._gather_async()
        else:
            acting = ray.put(self.learner.acting_state())
            length = self.cfg.policy.training.rollout
            futures = [r.rollout.remote(acting, length) for r in self.replicas]
            self._checkpoint(self.replicas)
            episodes = [e for replica in ray.get(futures) for e in replica]
        metrics = {**self._summary(episodes), **warm}
        metrics["fitness"] = self.fitness.update(metrics["relative_accuracy"])  # fitness.py
        with one_thread():  # two threads on these small networks can be many times slower
            metrics.update(self.learner.learn(episodes))
        self.iteration += 1
        metrics.update(
            iteration=self.iteration,
            policy_version=self.learner.policy.policy_version,
            episodes=len(episodes),
            stale_dropped=self.dropped,
        )
        metrics.update(searched_values(self.cfg))  # the values this iteration ran with
        record_iteration(self.run_dir, self.trial_id, metrics)  # the run's learning curve
        return metrics

    def _launch(self, replica: int, acting: Any) -> None:
        length = self.cfg.policy.training.rollout
        future = self.replicas[replica].rollout.remote(acting, length)
        self._pending[future] = (replica, self.learner.policy.policy_version)
        if self._saving:  # check the saves that are done without waiting for the others
            done, self._saving = ray.wait(self._saving, num_returns=len(self._saving), timeout=0)
            ray.get(done)
        self._saving.append(self.replicas[replica].checkpoint.remote())

    def _gather_async(self) -> list[Episode]:
        """The ready episodes not older than the staleness bound (at least one)."""
        acting = ray.put(self.learner.acting_state())
        busy = {r for r, _ in self._pending.values()}
        for r in range(len(self.replicas)):
            if r not in busy:
                self._launch(r, acting)
        fresh: list[Episode] = []
        version = self.learner.policy.policy_version
        bound = self.cfg.policy.training.max_staleness
        while not fresh:
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            more, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
            for future in dict.fromkeys([*ready, *more]):
                replica, acted = self._pending.pop(future)
                episodes = ray.get(future)  # one per organism of the replica
                if version - acted <= bound:
                    fresh.extend(episodes)
                else:
                    self.dropped += len(episodes)
                self._launch(replica, acting)
        return fresh

    @staticmethod
    def _summary(episodes: Sequence[Episode]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in _SUMMED:
            out[key] = sum(int(e.metrics[key]) for e in episodes)
        for key in _MEANS:
            values = [float(e.metrics[key]) for e in episodes if math.isfinite(e.metrics[key])]
            out[key] = sum(values) / len(values) if values else float("nan")
        out["diverged"] = sum(bool(e.metrics["diverged"]) for e in episodes)
        out["nodes"] = len({e.metrics["node_id"] for e in episodes})
        return out

    # -- state -----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Finish in-flight asynchronous rollouts (their episodes are dropped) so that the
        replicas' state is consistent."""
        if self._pending:
            self.dropped += sum(len(episodes) for episodes in ray.get(list(self._pending)))
            self._pending.clear()
        ray.get(self._saving)
        self._saving = []

    def state_dict(self) -> dict[str, Any]:
        """The member's whole state: iteration, config, the fitness's history, learner (policy,
        critic, optimizers) and every replica (organism and reference twin, masks, sensors,
        optimizer state, stream position, generators, event-log marks). Tensors and plain data
        only."""
        self._settle()
        return {
            "trial_id": self.trial_id,
            "iteration": self.iteration,
            "config": to_plain(self.cfg),
            "fitness": self.fitness.state_dict(),
            "learner": self.learner.state_dict(),
            "replicas": ray.get([r.state_dict.remote() for r in self.replicas]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: this member's own (its event log is rolled back to it) or,
        after a PBT exploit, another member's (its history is kept)."""
        self._settle()
        same = state["trial_id"] == self.trial_id
        self.iteration = int(state["iteration"])
        self.fitness.load_state_dict(state["fitness"])  # an exploit copies the history too
        self.learner.load_state_dict(state["learner"])
        ray.get(
            [
                r.load_state_dict.remote(s, same)
                for r, s in zip(self.replicas, state["replicas"], strict=True)
            ]
        )

    def record(self, events: list[SurgicalEvent]) -> None:
        """Record platform events in every replica's partition."""
        ray.get([r.record_events.remote(events) for r in self.replicas])

    def _end_actors(self) -> None:
        ray.get([r.close.remote() for r in self.replicas])
        for replica in self.replicas:
            ray.kill(replica)
        self.replicas = []

    def close(self) -> None:
        """Flush the replicas' event logs (manifests written) and end their actors."""
        self._settle()
        self._end_actors()
        shutil.rmtree(self._slots, ignore_errors=True)
