"""Config overrides for organisms that are cheap to run in tests."""

from __future__ import annotations

TINY_ORGANISM = [
    "policy.density=0.2",
    "policy.surgery_interval=4",
    "workload.batch_size=16",
    "workload.host.params.hidden=[32,16]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=2",
]
"""A 64-32-16-10 MLP at 20% density, K = 4, batches of 16: a surgery in milliseconds."""
