"""Fisher-guided selective forgetting as a heuristic: a static sparse network whose rigid
weights are shrunk and perturbed whenever the sensors see premature rigidification.

The organism's FGSF trigger (:class:`esper.workloads.sensors.fisher.FGSFTrigger`) fires for a
layer when its Fisher trace has risen and saturated while its gradient signal-to-noise ratio
falls: the layer has stopped gaining information and its gradients are turning to noise, the
primacy bias of Nikishin et al. (ICML 2022). This policy then forgets that layer's ``fraction``
most rigid active weights (highest Fisher diagonal, :func:`rigid_weights`; the contact-aware
Fisher when the sensors report it, so that for an agent rigidity is judged on its
decision-critical states): each is shrunk towards zero and perturbed with fresh noise
(:func:`esper.workloads.forgetting.shrink_perturb`, Ash & Adams, NeurIPS 2020), its mask
unchanged. Pruning follows :class:`~esper.policies.baselines.static.Static`: once, to the budget.
It is the hand-written counterpart of the forget action Emrakul's Specialists can take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from esper.policies.base import POLICIES
from esper.policies.baselines.static import Static
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.sensors.fisher import rigid_weights

__all__ = ["FGSF"]


@POLICIES.register("fgsf")
class FGSF(Static):
    """Static sparse, plus forgetting of rigid weights where the FGSF trigger fires.

    Args:
        fraction: Share of a firing layer's active weights forgotten, in ``(0, 1]``.
        use_contact: Rank rigidity by the contact-aware Fisher when the sensors give it.
        density: As :class:`Static` (``None``: the organism's target).
        distribution: As :class:`Static`.
    """

    name: ClassVar[str] = "fgsf"

    def __init__(
        self,
        fraction: float = 0.05,
        use_contact: bool = True,
        density: float | None = None,
        distribution: str = "erk",
    ) -> None:
        super().__init__(density, distribution)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction={fraction} must lie in (0, 1]")
        self.fraction = fraction
        self.use_contact = use_contact
        self.forgotten = 0

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Prune to the budget once; then forget in every layer the trigger names (every
        layer when it fires for the whole network)."""
        actions = super().act(organism, step)
        signal = step.reading.fgsf
        layers = organism.scalpel.names if signal.fired else list(signal.layers)
        for name in layers:
            stats = step.reading.gradients.layers.get(name)
            if stats is None:
                continue
            fisher = stats.contact_fisher if self.use_contact else None
            fisher = stats.fisher if fisher is None else fisher
            chosen = rigid_weights(fisher, self.fraction, organism.scalpel.mask(name))
            if chosen.numel():
                actions[name] = dataclasses.replace(actions.get(name, LayerAction()), forget=chosen)
                self.forgotten += int(chosen.numel())
        return actions

    def state_dict(self) -> dict[str, Any]:
        """:class:`Static`'s state and the weights forgotten so far."""
        return {**super().state_dict(), "forgotten": self.forgotten}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        self.forgotten = int(state.get("forgotten", 0))
