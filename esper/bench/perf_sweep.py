"""How much of a sweep's time goes to the organisms: ``sweep_efficiency``.

Surgeries per second of the demo's PBT sweep (:data:`~esper.platform.demo.DEMO_OVERRIDES`:
4 members × 2 replicas × 8 iterations of 3 surgeries, PBT every 2 iterations) on an embedded
Ray as the demo declares it (``cluster=laptop``: 4 logical CPUs, on this machine's cores), ÷
surgeries per second of the same work done by plain processes,
one per core, started at once: each runs a replica's own code (:class:`ReplicaWorker
<esper.platform.replica.ReplicaWorker>`: the organism, its reference twin, the event log, the
restart checkpoint) and a :class:`~esper.policies.central.CentralLearner` update per episode,
with the sweep's config. What the ratio leaves out is the platform's: Tune, actors, the
broadcast, checkpoints at perturbation points, exploits and MLflow. Goal ≥ 0.5.

The sweep is timed from the Tuner's start to its end (Ray is started before, outside the
timing: a session pays it once); the plain processes are timed after their imports and set-up
(what one long-lived process per core pays once). Importing this module registers the benchmark
in :data:`~esper.bench.harness.PERF`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from esper.bench.harness import PERF, BenchResult, SkipBenchmark, processes_at_once
from esper.conf import compose
from esper.config import to_plain
from esper.events.learning import read_learning_curves
from esper.platform.demo import DEMO_OVERRIDES
from esper.platform.ray_runtime import quiet_ray, start_local_ray
from esper.platform.replica import ReplicaSpec, ReplicaWorker
from esper.platform.runs import create_run
from esper.platform.sweep import run_sweep
from esper.policies.base import make_policy
from esper.policies.central import CentralLearner
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.seeding import small_seed
from esper.threads import one_thread

__all__ = ["sweep_efficiency"]

_PLAIN_WARMUP = 1
"""Iterations each plain process runs before its timing (the first builds the policy)."""


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _plain_worker(overrides: Sequence[str], index: int, iterations: int, start: Any,
                  out: Any) -> None:  # fmt: skip
    """One plain process: ``iterations`` episodes of one replica and learner updates."""
    with one_thread():
        cfg = compose(list(overrides))
        root = Path(tempfile.mkdtemp(prefix="esper-bench-sweep-plain-"))
        try:
            run_dir = root / "run"
            create_run(run_dir, cfg, "bench", "digits_permuted", "emrakul")
            spec = ReplicaSpec(str(run_dir), "t0", index, 1, to_plain(cfg), str(root / "r.pt"))
            worker = ReplicaWorker(spec)
            params = dict(cfg.policy.params)
            params["seed"] = small_seed(cfg.experiment.seed, "emrakul")
            policy = make_policy("emrakul", **params)
            assert isinstance(policy, EmrakulPolicy)
            policy.build(*worker.dims())
            learner = CentralLearner(policy, cfg.policy.training, cfg.experiment.seed)
            length = cfg.policy.training.rollout

            def iteration() -> int:
                episodes = worker.rollout(learner.acting_state(), length)
                learner.learn(episodes)
                worker.checkpoint()
                return sum(int(e.metrics["surgeries"]) for e in episodes)

            for _ in range(_PLAIN_WARMUP):
                iteration()
            start.wait()
            begin = time.perf_counter()
            surgeries = sum(iteration() for _ in range(iterations))
            out.put((surgeries, time.perf_counter() - begin))
            worker.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _plain_rate(overrides: Sequence[str], processes: int, iterations: int) -> float:
    """Surgeries per second of ``processes`` plain processes working at once."""
    done = processes_at_once(
        _plain_worker, [(overrides, i, iterations) for i in range(processes)], timeout=1200
    )
    return sum(s for s, _ in done) / max(t for _, t in done)


@PERF.register("sweep_efficiency")
def sweep_efficiency() -> BenchResult:
    """Surgeries/s of the demo's PBT sweep ÷ plain processes, one per core; goal ≥ 0.5."""
    if ray.is_initialized():
        raise SkipBenchmark("Ray is already running in this process; the benchmark starts its own")
    cores = _cores()
    overrides = list(DEMO_OVERRIDES)  # the demo as a user runs it (cluster=laptop)
    cfg = compose(overrides)
    t = cfg.policy.training
    per_process = max(1, (cfg.search.num_samples * t.replicas * t.iterations) // cores)
    plain = _plain_rate(overrides, cores, per_process)
    root = Path(tempfile.mkdtemp(prefix="esper-bench-sweep-"))
    try:
        run_dir = root / "sweep"
        create_run(run_dir, cfg, "sweep", "digits_permuted", "emrakul")
        quiet_ray()
        start_local_ray(cfg.cluster.num_cpus)
        try:
            begin = time.perf_counter()
            run_sweep(cfg, run_dir, Console(quiet=True), resume=False)
            seconds = time.perf_counter() - begin
        finally:
            ray.shutdown()
        curves = read_learning_curves(run_dir)
        surgeries = sum(int(r.get("surgeries") or 0) for r in curves)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rate = surgeries / seconds
    return BenchResult(
        ours_s=seconds / max(surgeries, 1),
        anchor=f"the same replicas' work in {cores} plain processes, one per core (s per "
        "surgery); ratio = throughput sweep ÷ plain",
        anchor_s=1.0 / plain,
        ratio=rate / plain,
        goal=0.5,
        direction=">=",
        notes=(
            f"demo sweep ({cfg.search.num_samples} members × {t.replicas} replicas × "
            f"{t.iterations} iterations × {t.rollout} surgeries, PBT every "
            f"{cfg.search.perturbation_interval}, reference twin '{cfg.search.reference}'): "
            f"{surgeries} surgeries in {seconds:.1f} s = {rate:.2f}/s; plain: {cores} processes "
            f"× {per_process} episodes = {plain:.2f} surgeries/s after their set-up; embedded "
            f"Ray num_cpus={cfg.cluster.num_cpus} on {cores} cores, started outside the timing"
        ),
    )
