"""GMP: gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune", arXiv 1710.01878).

Every ``Δt`` SGD steps from ``t_0`` for ``n`` steps, each layer is pruned by ``|w|`` to the
sparsity ``s_t = s_f + (s_0 − s_f)(1 − (t − t_0)/(nΔt))³`` (:class:`CubicSparsity`); pruned
weights never come back.

The organism is built at a density of its own (its ``policy.density``, with its ERK or uniform
allocation), so GMP starts from there rather than from a dense network: ``s_0`` is the
organism's global sparsity at :meth:`GMP.reset` and ``s_f = 1 − final_density``. Every pruned
layer keeps the same fraction of the weights it started with, chosen so that the global density
is ``1 − s_t``; the organism's allocation shape is thus preserved (Zhu & Gupta prune every layer
to the same sparsity, the special case of a uniformly allocated start). Layers a sparse organism
keeps fully dense (``workload.scalpel.keep_dense``) are not pruned. By default
``final_density`` is half the organism's initial density: GMP starts at the budget and halves it
over ``nΔt`` steps. The commands run the paper's dense-to-sparse setting: with ``policy=gmp``,
``policy.density`` is the budget GMP reaches, the organism is built dense, and the budget is
passed as ``final_density`` (:func:`esper.policies.base.dense_start`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines._dense_layers import _kept_dense
from esper.policies.baselines._magnitude import prune_to_counts
from esper.policies.baselines.schedules import CubicSparsity, check_cubic_timing
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["GMP"]


@POLICIES.register("gmp")
class GMP(Policy):
    """Gradual magnitude pruning on the cubic schedule, no regrowth.

    Args:
        final_density: Global density reached at ``t_0 + nΔt``, in ``(0, 1)``; below the
            organism's initial density (``None``: half of it).
        begin: ``t_0``, the SGD step of the first pruning step.
        frequency: ``Δt``, SGD steps between pruning steps (paper: 100 to 1000).
        steps: ``n``, the number of pruning steps.
    """

    name: ClassVar[str] = "gmp"
    prunes_from_dense: ClassVar[bool] = True

    def __init__(
        self,
        final_density: float | None = None,
        begin: int = 0,
        frequency: int = 100,
        steps: int = 100,
    ) -> None:
        if final_density is not None and not 0.0 < final_density < 1.0:
            raise ValueError(
                f"final_density={final_density} must lie in (0, 1), or None for half the "
                f"organism's initial density"
            )
        check_cubic_timing(begin, frequency, steps)
        self.final_density = final_density
        self.begin = begin
        self.frequency = frequency
        self.steps = steps
        self.initial_counts: dict[str, int] = {}
        self.total = 0
        self.dense_kept = 0
        self.schedule: CubicSparsity | None = None

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Read the organism's initial density and per-layer counts; build the schedule.

        Raises:
            ValueError: ``final_density`` is not below the organism's initial density.
        """
        scalpel = organism.scalpel
        initial = scalpel.global_density()
        final = self.final_density if self.final_density is not None else initial / 2.0
        if final >= initial:
            raise ValueError(
                f"GMP prunes from the organism's initial density {initial:.4g} down to "
                f"final_density={final:.4g}; pass a final_density below {initial:.4g} or build "
                f"the organism denser (policy.density)"
            )
        dense = set(_kept_dense(scalpel))
        self.initial_counts = {
            n: int(scalpel.mask(n).count_nonzero()) for n in scalpel.names if n not in dense
        }
        self.total = sum(scalpel.numel(n) for n in scalpel.names)
        self.dense_kept = sum(scalpel.numel(n) for n in dense)
        if final * self.total <= self.dense_kept:
            raise ValueError(
                f"final_density={final:.4g} leaves no weights for the pruned layers: the layers "
                f"kept dense ({', '.join(sorted(dense))}) alone hold a density of "
                f"{self.dense_kept / self.total:.4g}; raise final_density"
            )
        self.schedule = CubicSparsity(
            1.0 - initial, 1.0 - final, self.begin, self.frequency, self.steps
        )

    def targets(self, t: int) -> dict[str, int]:
        """Kept weights per layer at SGD step ``t``.

        Raises:
            RuntimeError: called before :meth:`reset`.
        """
        if self.schedule is None:
            raise RuntimeError("call reset(organism, first) before act")
        pruned = sum(self.initial_counts.values())
        keep = ((1.0 - self.schedule(t)) * self.total - self.dense_kept) / max(pruned, 1)
        return {n: round(min(keep, 1.0) * c) for n, c in self.initial_counts.items()}

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Prune each layer above its scheduled count to it, smallest ``|w|`` first."""
        return prune_to_counts(organism, self.targets(organism.sgd_step))

    def state_dict(self) -> dict[str, Any]:
        """Initial counts, the kept-dense share and the schedule's endpoints."""
        if self.schedule is None:
            return {}
        return {
            "initial_counts": dict(self.initial_counts),
            "total": self.total,
            "dense_kept": self.dense_kept,
            "initial": self.schedule.initial,
            "final": self.schedule.final,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        if not state:
            return
        self.initial_counts = dict(state["initial_counts"])
        self.total = int(state["total"])
        self.dense_kept = int(state["dense_kept"])
        self.schedule = CubicSparsity(
            float(state["initial"]), float(state["final"]), self.begin, self.frequency, self.steps
        )
