"""One row of the ``esper bench quality`` table: a :class:`Condition`, and RigL's horizons.

A condition is a surgeon at a density with everything that sets it apart from another row
(the Emrakul variant and training run whose checkpoint it loads, ablation switches, RigL's
``T_end``, the layer allocation, an anchor's config overrides and options);
:func:`esper.bench.quality_suite.conditions` expands a preset into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CONTINUAL_HORIZON", "RIGL_HORIZON", "Condition"]


RIGL_HORIZON = 0.75
"""RigL's ``T_end`` as a fraction of the stream: Evci et al. 2020 stop updating the mask at 75%
of training. On a drifting stream that freezes the mask for the last quarter, so the suite also
runs ``rigl_continual`` (``T_end`` = 10 × the stream: a near-constant drop fraction ``α``
throughout), the stronger baseline for continual learning."""

CONTINUAL_HORIZON = 10.0
"""``T_end`` of ``rigl_continual``, as a fraction of the stream."""


@dataclass(frozen=True)
class Condition:
    """One row of the table: a surgeon at a density (a baseline once per layer allocation it
    is tried under, an anchor once per allocation and option set; the run keeps the one chosen
    on the validation seeds).

    Attributes:
        label: Name in the table (policy name, ``emrakul_<ablation>``, ``…_run<r>``).
        policy: Policy to build (``emrakul`` conditions load a trained checkpoint).
        density: Density budget.
        streams: Stream names it runs on (every stream unless restricted).
        variant: The Emrakul training variant whose checkpoint it uses (``None`` otherwise;
            ``imitation_only`` is the full policy's snapshot before RL).
        switches: Policy attributes set after loading the checkpoint (ablation switches).
        horizon: RigL's ``T_end`` as a fraction of the stream (RigL conditions only).
        run: The training run whose checkpoint it uses (an index of ``train_seeds``).
        allocation: ``workload.scalpel.distribution`` of a sparse baseline (``None``: the
            workload's own, as dense runs and Emrakul, which was trained with it, keep).
        overrides: Config overrides of its own, after the policy's (an anchor's method).
        options: The candidate option set it runs with, after ``overrides`` (one point of an
            anchor's grid, chosen on the validation seeds).
    """

    label: str
    policy: str
    density: float
    streams: tuple[str, ...]
    variant: str | None = None
    switches: tuple[tuple[str, Any], ...] = ()
    horizon: float = RIGL_HORIZON
    run: int = 0
    allocation: str | None = None
    overrides: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @property
    def config_overrides(self) -> tuple[str, ...]:
        """Its own config overrides, then its options: what follows the policy's."""
        return (*self.overrides, *self.options)
