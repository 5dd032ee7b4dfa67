"""One embedded Ray for the platform tests that need it (module-scoped, as STYLE.md asks)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from esper.platform.ray_runtime import start_local_ray

TINY = [
    "policy=emrakul",
    "policy.density=0.2",
    "policy.surgery_interval=10",
    "workload.batch_size=16",
    "workload.host.params.hidden=[32,16]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=2",
    "policy.training.rollout=3",
    "policy.training.replicas=2",
    "cluster.replica_cpus=0.5",
]
"""Overrides for a member that is cheap to run: tiny MLP, short surgeries."""


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """An embedded Ray of its own with 2 logical CPUs, shut down after the module."""
    start_local_ray(2)
    try:
        yield
    finally:
        ray.shutdown()
