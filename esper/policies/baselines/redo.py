"""ReDo: recycling dormant neurons (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", arXiv 2302.12902; dopamine ``labs/redo/weight_recyclers.py``).

A unit's score is its mean absolute activation over the batch divided by the layer's mean,
``s_i = E|h_i| / ((1/H) Σ_j E|h_j|)``; it is *τ-dormant* when ``s_i ≤ τ``. Every ``interval``
SGD steps, every dormant hidden unit is re-initialised
(:func:`esper.workloads.units.reset_units`: fresh incoming weights, zero outgoing weights, optimizer
moments reset). Scores are the Nervous System's (``reading.activity[layer].scores``, taken on the
sensing batch after each layer's activation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines._units import _resettable_layers
from esper.policies.baselines.schedules import UpdateClock
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ReDo"]


@POLICIES.register("redo")
class ReDo(Policy):
    """Reset the τ-dormant units of every hidden layer.

    Args:
        threshold: τ, the dormancy threshold on the normalised score (paper: 0.1), ≥ 0.
        interval: SGD steps between two recycling passes (paper: 1000).
    """

    name: ClassVar[str] = "redo"

    def __init__(self, threshold: float = 0.1, interval: int = 1000) -> None:
        if threshold < 0:
            raise ValueError(f"threshold={threshold} must be ≥ 0 (paper: τ = 0.1)")
        self.threshold = threshold
        self.clock = UpdateClock(interval)
        self.layers: list[str] = []

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Find the hidden layers and start the clock."""
        self.layers = _resettable_layers(organism)
        self.clock.reset()

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """When a pass is due, reset every unit whose score is at most τ."""
        if not self.clock.due(organism.sgd_step):
            return {}
        actions: dict[str, LayerAction] = {}
        for name in self.layers:
            scores = step.reading.activity[name].scores.cpu()
            dormant = (scores <= self.threshold).nonzero().view(-1)
            if dormant.numel():
                actions[name] = LayerAction(reset_units=dormant)
        return actions

    def state_dict(self) -> dict[str, Any]:
        """The clock."""
        return {"clock": self.clock.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.clock.load_state_dict(state["clock"])
