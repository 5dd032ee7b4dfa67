"""Config overrides for organisms that are cheap to run in tests."""

from __future__ import annotations

from esper.config import EsperConfig
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep

TINY_ORGANISM = [
    "policy.density=0.2",
    "policy.surgery_interval=4",
    "workload.batch_size=16",
    "workload.host.params.hidden=[32,16]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=2",
]
"""A 64-32-16-10 MLP at 20% density, K = 4, batches of 16: a surgery in milliseconds."""


def alone_and_in_cohort(
    cfg: EsperConfig, members: int, surgeries: int
) -> tuple[list[Organism], Cohort, list[tuple[OrganismStep, OrganismStep]]]:
    """Organisms of replica ids ``0..members-1`` built twice from ``cfg``: stepped alone, and
    as one :class:`~esper.workloads.cohort.Cohort`, through ``surgeries`` empty surgeries.
    Returns both, and every (alone, in the cohort) pair of steps."""
    alone = [build_organism(cfg, r) for r in range(members)]
    cohort = Cohort([build_organism(cfg, r) for r in range(members)])
    for organism in alone:
        organism.reset()
    cohort.reset()
    pairs: list[tuple[OrganismStep, OrganismStep]] = []
    for _ in range(surgeries):
        steps = [organism.step({}) for organism in alone]
        pairs += zip(steps, cohort.step([{}] * members), strict=True)
    return alone, cohort, pairs
