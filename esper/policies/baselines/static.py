"""The static sparse baseline: prune once to the budget by magnitude, then never again.

At its first surgery the policy prunes each layer to its share of the budget under the
``uniform`` or ``erk`` allocation (:func:`esper.workloads.scalpel.allocate`; ERK as RigL,
Evci et al. 2020), keeping the largest ``|w|``. The budget is the ``density`` parameter, or by
default the organism's own target (``organism.scalpel.target_density``). An organism built
dense (``policy.density=1``) is thus one-shot magnitude pruned after its first ``K`` steps; an
organism built at the budget with the same allocation is already there, and ``static`` is the
classic fixed random sparse network. Layers a sparse organism keeps fully dense
(``workload.scalpel.keep_dense``) stay dense and count towards the budget, as in the allocation.
Only pruning happens: a layer holding fewer weights than its share keeps what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines._dense_layers import _kept_dense
from esper.policies.baselines._magnitude import prune_to_counts
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel import DISTRIBUTIONS, allocate

__all__ = ["Static"]


@POLICIES.register("static")
class Static(Policy):
    """Prune once to budget by magnitude with a ``uniform`` or ``erk`` allocation.

    Args:
        density: Global density to prune to, in ``(0, 1]`` (``None``: the organism's target).
        distribution: Layer allocation of the budget: ``uniform`` or ``erk``.
    """

    name: ClassVar[str] = "static"

    def __init__(self, density: float | None = None, distribution: str = "erk") -> None:
        if density is not None and not 0.0 < density <= 1.0:
            raise ValueError(f"density={density} must lie in (0, 1], or None for the budget")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution={distribution!r} is unknown; valid: "
                f"{', '.join(DISTRIBUTIONS.names())}"
            )
        self.density = density
        self.distribution = distribution
        self.counts: dict[str, int] = {}
        self.done = False

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Allocate the budget over the organism's layers."""
        scalpel = organism.scalpel
        density = self.density if self.density is not None else scalpel.target_density
        shapes = {n: tuple(scalpel.mask(n).shape) for n in scalpel.names}
        self.counts = allocate(shapes, density, self.distribution, _kept_dense(scalpel))
        self.done = False

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """At the first call, prune every layer above its share to it by ``|w|``."""
        if self.done:
            return {}
        self.done = True
        return prune_to_counts(organism, self.counts)

    def state_dict(self) -> dict[str, Any]:
        """The allocation and whether the one pruning happened."""
        return {"counts": dict(self.counts), "done": self.done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.counts = dict(state["counts"])
        self.done = bool(state["done"])
