"""Performance benchmarks of the Ray platform: replica actors and the central learner.

- ``replica_scaling_2_vs_1``: surgeries per second of a member with 2 replica actors ÷ with 1,
  each replica rolling the same episode per iteration (:meth:`Population.step
  <esper.platform.population.Population.step>`: one broadcast, the rollouts, one learner
  update), on an embedded Ray of 2 CPUs with one CPU per replica. Goal ≥ 1.7. The notes give
  the rollouts' own scaling (no learner update) and the machine's: the same rollouts in two
  plain processes, without Ray.
- ``ray_overhead``: surgeries per second of a member with 1 replica actor ÷ the same work in
  this process (organism, rollout recording its events and metrics, one
  :class:`~esper.policies.central.CentralLearner` update: ``esper train-policy``'s loop),
  timed alternately. Goal ≥ 0.85. The notes split what the platform adds per iteration
  with a third loop timed in turn, the replica's own code (:class:`ReplicaWorker
  <esper.platform.replica.ReplicaWorker>`) called in this process, one call after the other:
  its bookkeeping (the restart checkpoint after every episode and the event-log flush it
  forces) and Ray's share (broadcast, an actor call's round trip, the episode coming back).
  On Ray the replica writes its checkpoint while the learner updates, so the two overlap.

Both run the demo's member sizes (:data:`OVERRIDES`), start their own embedded Ray and shut it
down at the end; with Ray already up in this process (resources they cannot set) they are
skipped. Actor start and the first iterations are warm-up, outside the timing; the numbers are
medians. Importing this module registers the benchmarks in :data:`~esper.bench.harness.PERF`.
"""

from __future__ import annotations

import os
import pickle
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from esper.bench.harness import (
    PERF,
    BenchResult,
    SkipBenchmark,
    alternating_median_times,
    median_time,
    processes_at_once,
)
from esper.checkpoint import save_checkpoint
from esper.conf import compose
from esper.config import EsperConfig, to_plain
from esper.platform.population import Population
from esper.platform.ray_runtime import start_local_ray
from esper.platform.recorder import ReplicaRecorder
from esper.platform.replica import ReplicaSpec, ReplicaWorker
from esper.platform.runs import create_run
from esper.policies.base import make_policy
from esper.policies.central import CentralLearner
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.rollout import Episode, rollout
from esper.seeding import small_seed
from esper.threads import one_thread
from esper.workloads.factory import build_organism
from esper.workloads.organism import OrganismStep

__all__ = ["OVERRIDES", "ray_overhead", "replica_scaling_2_vs_1"]

OVERRIDES: tuple[str, ...] = (
    "policy=emrakul",
    "policy.density=0.1",
    "policy.surgery_interval=25",
    "policy.training.rollout=3",
    "cluster.replica_cpus=1",
)
"""A demo member's sizes (digits, MLP host, 10% density, 25 SGD steps per surgery, episodes of 3
surgeries), one CPU per replica actor."""

_RAY_CPUS = 2
_WARMUP = 2
"""Iterations after the actors start that are not timed (the first builds the policy copies)."""
_REPEATS = 15
_PHASE_REPEATS = 10
_CALLS = 50
"""Actor round trips timed for the call latency."""
_MACHINE_EPISODES = 10
"""Episodes each plain process times for the machine's own scaling."""


@contextmanager
def _embedded_ray() -> Iterator[None]:
    if ray.is_initialized():
        raise SkipBenchmark(
            "Ray is already running in this process; the benchmark starts its own embedded Ray "
            f"with {_RAY_CPUS} CPUs"
        )
    start_local_ray(_RAY_CPUS)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="esper-bench-platform-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _load() -> str:
    """The machine's 1-minute load average, for the notes (other processes share the cores)."""
    return f"1-min load average {os.getloadavg()[0]:.2f} at the start"


def _config(replicas: int) -> EsperConfig:
    return compose([*OVERRIDES, f"policy.training.replicas={replicas}"])


def _surgeries(cfg: EsperConfig) -> int:
    """Surgeries of one iteration: every replica's episode."""
    return cfg.policy.training.replicas * cfg.policy.training.rollout


def _new_run(cfg: EsperConfig, run_dir: Path) -> Path:
    create_run(run_dir, cfg, "bench", "digits_permuted", "emrakul")
    return run_dir


@contextmanager
def _member(cfg: EsperConfig, run_dir: Path) -> Iterator[Population]:
    population = Population(cfg, _new_run(cfg, run_dir), "t0", run_dir / "state" / "t0")
    try:
        for _ in range(_WARMUP):
            population.step()
        yield population
    finally:
        population.close()


def _rollout_phase(population: Population) -> float:
    """Median seconds of the replicas' rollouts alone (one broadcast, no learner update)."""
    acting = ray.put(population.learner.acting_state())
    length = population.cfg.policy.training.rollout
    return median_time(
        lambda: ray.get([r.rollout.remote(acting, length) for r in population.replicas]),
        repeats=_PHASE_REPEATS,
        warmup=0,
    )


def _plain_rollouts(overrides: Sequence[str], replica_id: int, start: Any, out: Any) -> None:
    """One plain process (no Ray): seconds per episode of this member's rollouts, timed once
    every process of the measurement is ready (``start`` is a barrier)."""
    with one_thread():
        cfg = compose(list(overrides))
        organism = build_organism(cfg, replica_id)
        step = organism.reset()
        params = dict(cfg.policy.params)
        params["seed"] = small_seed(cfg.experiment.seed, "bench", replica_id)
        policy = make_policy("emrakul", **params)
        assert isinstance(policy, EmrakulPolicy)
        policy.reset(organism, step)
        length = cfg.policy.training.rollout
        _, step = rollout(organism, step, policy, length)
        start.wait()
        begin = time.perf_counter()
        for _ in range(_MACHINE_EPISODES):
            _, step = rollout(organism, step, policy, length)
        out.put((time.perf_counter() - begin) / _MACHINE_EPISODES)


def _plain_episode_seconds(processes: int) -> float:
    """Mean seconds per episode of ``processes`` plain processes rolling out at once."""
    seconds = processes_at_once(
        _plain_rollouts, [(OVERRIDES, i) for i in range(processes)], timeout=600
    )
    return statistics.fmean(seconds)


@PERF.register("replica_scaling_2_vs_1")
def replica_scaling_2_vs_1() -> BenchResult:
    """Surgeries/s with 2 replica actors ÷ with 1 (same episode per replica); goal ≥ 1.7."""
    load = _load()
    per_surgery: dict[int, float] = {}
    rollouts: dict[int, float] = {}
    with _embedded_ray(), _tempdir() as root:
        for replicas in (1, 2):
            cfg = _config(replicas)
            with _member(cfg, root / f"r{replicas}") as population:
                step = median_time(population.step, repeats=_REPEATS, warmup=0)
                per_surgery[replicas] = step / _surgeries(cfg)
                rollouts[replicas] = _rollout_phase(population)
    machine = 2 * _plain_episode_seconds(1) / _plain_episode_seconds(2)
    ratio = per_surgery[1] / per_surgery[2]
    length = _config(1).policy.training.rollout
    return BenchResult(
        ours_s=per_surgery[2],
        anchor="1 replica actor (seconds per surgery); ratio = throughput 2 ÷ 1",
        anchor_s=per_surgery[1],
        ratio=ratio,
        goal=1.7,
        direction=">=",
        notes=(
            f"embedded Ray num_cpus={_RAY_CPUS}, replica_cpus=1, one torch thread per actor; "
            f"{' '.join(OVERRIDES[1:4])}; Population.step (broadcast, rollouts, learner update), "
            f"median of {_REPEATS} after {_WARMUP} warm-up iterations; iteration "
            f"{per_surgery[1] * length:.3f} s (1 replica) vs {per_surgery[2] * 2 * length:.3f} s "
            f"(2); rollouts alone (no learner update) {rollouts[1]:.3f} s vs "
            f"{rollouts[2]:.3f} s: scaling {2 * rollouts[1] / rollouts[2]:.2f}; the machine's "
            f"own scaling (the same rollouts in 2 plain processes vs 1, no Ray, no recording) "
            f"{machine:.2f}; {load}"
        ),
    )


class _InProcessMember:
    """The member's work without Ray: ``esper train-policy``'s loop over one organism, its
    events and metrics recorded, one learner update per episode."""

    def __init__(self, cfg: EsperConfig, run_dir: Path) -> None:
        seed = cfg.experiment.seed
        self.length = cfg.policy.training.rollout
        self.organism = build_organism(cfg, 0, run_id=run_dir.name, trial_id="t0")
        self.recorder = ReplicaRecorder(run_dir, "emrakul", "t0", 0)
        with one_thread():
            self.step = self.organism.reset()
        self.recorder.record(self.organism, self.step)
        params = dict(cfg.policy.params)
        params["seed"] = small_seed(seed, "emrakul")
        policy = make_policy("emrakul", **params)
        assert isinstance(policy, EmrakulPolicy)
        policy.reset(self.organism, self.step)
        self.learner = CentralLearner(policy, cfg.policy.training, seed)
        self.episode = Episode()

    def _record(self, step: OrganismStep) -> None:
        self.recorder.record(self.organism, step, self.learner.policy.policy_version)

    def iteration(self) -> None:
        with one_thread():
            self.episode, self.step = rollout(
                self.organism, self.step, self.learner.policy, self.length, self._record
            )
            self.learner.learn([self.episode])


class _ReplicaInProcess:
    """The replica actor's own code (:class:`ReplicaWorker`: recording, restart checkpoint)
    called in this process, with the learner: the platform's work without Ray."""

    def __init__(self, cfg: EsperConfig, run_dir: Path) -> None:
        self.length = cfg.policy.training.rollout
        restart = run_dir / "restart.pt"
        self.worker = ReplicaWorker(
            ReplicaSpec(str(run_dir), "t0", 0, 1, to_plain(cfg), str(restart))
        )
        params = dict(cfg.policy.params)
        params["seed"] = small_seed(cfg.experiment.seed, "emrakul")
        policy = make_policy("emrakul", **params)
        assert isinstance(policy, EmrakulPolicy)
        policy.build(*self.worker.dims())
        self.learner = CentralLearner(policy, cfg.policy.training, cfg.experiment.seed)

    def iteration(self) -> None:
        episodes = self.worker.rollout(self.learner.acting_state(), self.length)
        with one_thread():
            self.learner.learn(episodes)
        self.worker.checkpoint()


def _parts(run_dir: Path) -> int:
    return len(list(run_dir.glob("*/trial=*/replica=*/part-*.parquet")))


@PERF.register("ray_overhead")
def ray_overhead() -> BenchResult:
    """Surgeries/s of 1 replica actor + learner ÷ the same loop in process; goal ≥ 0.85."""
    cfg = _config(1)
    load = _load()
    with _embedded_ray(), _tempdir() as root:
        local = _InProcessMember(cfg, _new_run(cfg, root / "local"))
        plain = _ReplicaInProcess(cfg, _new_run(cfg, root / "plain"))
        for _ in range(_WARMUP):
            local.iteration()
            plain.iteration()
        with _member(cfg, root / "ray") as population:
            before = (_parts(root / "ray"), _parts(root / "local"))
            t_ray, t_plain, t_local = alternating_median_times(
                [population.step, plain.iteration, local.iteration], repeats=_REPEATS, warmup=0
            )
            parts = (_parts(root / "ray") - before[0], _parts(root / "local") - before[1])
            acting = population.learner.acting_state()
            put = median_time(lambda: ray.put(acting), repeats=_CALLS, warmup=3)
            replica = population.replicas[0]
            call = median_time(lambda: ray.get(replica.pid.remote()), repeats=_CALLS, warmup=3)
            state = ray.get(replica.state_dict.remote())
            restart = root / "restart.pt"
            save = median_time(
                lambda: save_checkpoint(restart, "replica", state), repeats=5, warmup=1
            )
            restart_mb = restart.stat().st_size / 2**20
        local.recorder.close()
        plain.worker.close()
    surgeries = _surgeries(cfg)
    acting_kb = len(pickle.dumps(acting)) / 1024
    episode_kb = len(pickle.dumps(local.episode)) / 1024
    return BenchResult(
        ours_s=t_ray / surgeries,
        anchor="the same loop in this process (s per surgery); ratio = throughput Ray ÷ local",
        anchor_s=t_local / surgeries,
        ratio=t_local / t_ray,
        goal=0.85,
        direction=">=",
        notes=(
            f"embedded Ray num_cpus={_RAY_CPUS}, 1 replica actor (replica_cpus=1); "
            f"{' '.join(OVERRIDES[1:4])}; one iteration = {surgeries} surgeries + 1 learner "
            f"update; medians of {_REPEATS}, the three timed in turn: {t_ray:.3f} s on Ray, "
            f"{t_plain:.3f} s with the replica's own code (ReplicaWorker) called in process, "
            f"{t_local:.3f} s for the in-process loop, so per iteration the replica's "
            f"bookkeeping adds {1000 * (t_plain - t_local):.0f} ms in process, and Ray "
            f"{1000 * (t_ray - t_plain):+.0f} ms to that (the replica saves its checkpoint "
            f"while the learner updates). Bookkeeping: the restart checkpoint after "
            f"every episode ({restart_mb:.2f} MiB; save_checkpoint {1000 * save:.0f} ms, its "
            f"save-time plain-data check included) and the event-log flush it forces "
            f"({parts[0]} parts in {_REPEATS} iterations on Ray vs {parts[1]} in process). "
            f"Ray: ray.put of the acting state ({acting_kb:.0f} KiB) {1000 * put:.1f} ms, an "
            f"actor call's round trip {1000 * call:.2f} ms, the episode back "
            f"({episode_kb:.0f} KiB); {load}"
        ),
    )
