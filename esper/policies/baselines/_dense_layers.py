"""Which layers a sparse organism keeps dense (``workload.scalpel.keep_dense``)."""

from __future__ import annotations

from esper.workloads.scalpel import Scalpel

__all__: list[str] = []


def _kept_dense(scalpel: Scalpel) -> list[str]:
    """Layers at density 1 in an organism that is sparse overall (none if it is all dense).

    The organism's Scalpel does not record its ``keep_dense`` list; in a sparse organism a fully
    dense layer is one it chose to keep dense (or one that ERK saturated), and the budgeted
    baselines leave it dense too.
    """
    if scalpel.global_density() >= 1.0:
        return []
    return [n for n in scalpel.names if scalpel.density(n) >= 1.0]
