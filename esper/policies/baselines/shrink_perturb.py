"""Shrink & Perturb (Ash & Adams, NeurIPS 2020, "On Warm-Starting Neural Network Training",
arXiv 1910.08475): pull every weight towards zero and add a little fresh initial noise,

    θ ← λ·θ + σ·ε,    ε drawn from the layer's initial distribution,

which restores the gradient signal a warm-started (or long-trained) network has lost while
keeping most of what it learned. Every ``interval`` SGD steps this surgeon applies it to the
active weights of every prunable layer (the organism's ``forget`` action,
:func:`esper.workloads.forgetting.shrink_perturb`, with ``ε ~ U(±1/√fan_in)``: a draw of torch's
default initialisation, as the widely used snippet takes ``ε`` from a freshly initialised copy
of the model); masks do not change, so pruned weights stay at zero and the density is untouched.

Defaults: ``λ = 0.8``, ``σ = 0.01`` every 1000 SGD steps. In the warm-start setting the trick is
applied once per arrival of new data with a strong shrink (``λ = 0.4``, ``σ = 0.1`` in the
snippet, the defaults of :mod:`esper.workloads.forgetting`), close to a reset. Applied
periodically inside a continual stream that is too strong; continual-learning implementations
default to the milder ``λ = 0.8``, ``σ = 0.01`` of a fresh init draw (the optax
``shrink_perturb`` transform of ``LucMc/continual-learning``, and others; Plasticine's per-update
variant is the interpolation ``λ·θ + (1−λ)·θ_init`` with λ close to 1, and the SWR paper's
baseline the per-step form, L2 decay plus ``N(0, 10⁻⁷)`` noise). To reproduce the
warm-start paper, pass ``shrink=0.4, perturb=0.1`` with ``interval`` the length of a task.

Differences from the paper: biases and unmasked parameters (norms, embeddings) are not
touched, only the weights the Scalpel masks; the optimizer's per-weight state at the perturbed
weights is cleared (:func:`~esper.workloads.forgetting.shrink_perturb`), as a warm start
begins with a fresh optimizer; ``ε`` comes from the organism's random stream, so a run's seed
fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines.schedules import UpdateClock
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ShrinkPerturb"]


@POLICIES.register("shrink_perturb")
class ShrinkPerturb(Policy):
    """Shrink and perturb the active weights of every layer every ``interval`` SGD steps.

    Args:
        interval: SGD steps between two applications, ≥ 1.
        shrink: ``λ``, the fraction of each weight kept, in ``[0, 1]`` (warm-start paper: 0.4;
            continual use: 0.8).
        perturb: ``σ``, the scale of the fresh ``U(±1/√fan_in)`` draw added, in ``[0, 1]``
            (warm-start paper: 0.1; continual use: 0.01).
    """

    name: ClassVar[str] = "shrink_perturb"

    def __init__(self, interval: int = 1000, shrink: float = 0.8, perturb: float = 0.01) -> None:
        if interval < 1:
            raise ValueError(f"interval={interval} must be ≥ 1 SGD step")
        if not 0.0 <= shrink <= 1.0:
            raise ValueError(f"shrink={shrink} must lie in [0, 1] (paper: 0.4; continual: 0.8)")
        if not 0.0 <= perturb <= 1.0:
            raise ValueError(f"perturb={perturb} must lie in [0, 1] (paper: 0.1; continual: 0.01)")
        self.clock = UpdateClock(interval)
        self.shrink = shrink
        self.perturb = perturb
        self.applied = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Start the clock."""
        self.clock.reset()

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """When due, shrink and perturb every layer's active weights; else nothing."""
        if not self.clock.due(organism.sgd_step):
            return {}
        self.applied += 1
        actions = {}
        for name in organism.scalpel.names:
            active = organism.scalpel.mask(name).view(-1).nonzero().view(-1).cpu()
            if active.numel():
                actions[name] = LayerAction(
                    forget=active, forget_shrink=self.shrink, forget_perturb=self.perturb
                )
        return actions

    def state_dict(self) -> dict[str, Any]:
        """The clock and the number of applications so far."""
        return {"clock": self.clock.state_dict(), "applied": self.applied}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.clock.load_state_dict(state["clock"])
        self.applied = int(state["applied"])
