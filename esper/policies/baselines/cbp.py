"""CBP: continual backprop (Dohare et al., "Loss of plasticity in deep continual learning",
Nature 632, 2024; ``shibhansh/loss-of-plasticity``, ``lop/algos/cbp_linear.py``).

Each hidden unit ``i`` carries a *contribution utility*, a running average of
``|h_i| · Σ_k |w_out[k, i]|`` (its mean absolute activation times the magnitude of its outgoing
weights) with decay ``η = 0.99``, bias-corrected as ``u_i / (1 − η^a_i)``. A unit is *mature*
once its age exceeds the maturity threshold. The number of units to replace accumulates at the
replacement rate ``ρ`` per mature unit per SGD step; whenever it reaches a whole number, that
many mature units of lowest corrected utility are re-initialised
(:func:`esper.workloads.units.reset_units`: fresh incoming weights, zero outgoing weights) and
their utility and age reset.

Timescale difference from ``cbp_linear``: there the utility is updated at every SGD step on the
training batch; here it is updated once per surgery (every ``K`` SGD steps) on the sensing batch
(the most recent training batches, read by the Nervous System), so ``η`` applies per surgery. Ages,
the maturity threshold and the replacement rate stay in SGD steps (each surgery adds ``K`` to
the ages and ``ρ · K`` per mature unit to the replacement count). ``cbp_linear`` also folds the
replaced unit's mean contribution into the next layer's bias; we do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines._units import _mean_abs_activation, _resettable_layers
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.units import unit_wiring

__all__ = ["CBP"]


class _Units:
    """CBP's per-unit state of one layer."""

    def __init__(self, count: int) -> None:
        self.utility = torch.zeros(count, dtype=torch.float64)
        self.age = torch.zeros(count, dtype=torch.int64)
        self.updates = torch.zeros(count, dtype=torch.int64)
        self.pending = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "utility": self.utility.clone(),
            "age": self.age.clone(),
            "updates": self.updates.clone(),
            "pending": self.pending,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.utility = state["utility"].clone()
        self.age = state["age"].clone()
        self.updates = state["updates"].clone()
        self.pending = float(state["pending"])


@POLICIES.register("cbp")
class CBP(Policy):
    """Continual backprop: replace the lowest-utility mature hidden units.

    Args:
        replacement_rate: ``ρ``, units replaced per mature unit per SGD step (paper: 1e-4
            to 1e-6), in ``[0, 1]``.
        decay_rate: ``η``, decay of the utility's running average (paper: 0.99), in ``[0, 1)``.
        maturity_threshold: Age in SGD steps before a unit may be replaced (paper: 100).
    """

    name: ClassVar[str] = "cbp"

    def __init__(
        self,
        replacement_rate: float = 1e-4,
        decay_rate: float = 0.99,
        maturity_threshold: int = 100,
    ) -> None:
        if not 0.0 <= replacement_rate <= 1.0:
            raise ValueError(
                f"replacement_rate={replacement_rate} must lie in [0, 1] (paper: 1e-4 to 1e-6)"
            )
        if not 0.0 <= decay_rate < 1.0:
            raise ValueError(f"decay_rate={decay_rate} must lie in [0, 1) (paper: 0.99)")
        if maturity_threshold < 0:
            raise ValueError(f"maturity_threshold={maturity_threshold} must be ≥ 0 (paper: 100)")
        self.replacement_rate = replacement_rate
        self.decay_rate = decay_rate
        self.maturity_threshold = maturity_threshold
        self.units: dict[str, _Units] = {}
        self.last_step = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Zero utilities for every hidden layer's units, aged by the SGD steps already taken."""
        self.units = {
            n: _Units(organism.scalpel.mask(n).shape[0]) for n in _resettable_layers(organism)
        }
        for units in self.units.values():
            units.age += organism.sgd_step
        self.last_step = organism.sgd_step

    def utilities(self) -> dict[str, torch.Tensor]:
        """Bias-corrected utilities ``u / (1 − η^a)`` per layer (0 for units never updated)."""
        out = {}
        for name, units in self.units.items():
            correction = 1.0 - self.decay_rate ** units.updates.to(torch.float64)
            out[name] = torch.where(
                units.updates > 0, units.utility / correction.clamp_min(1e-12), 0.0
            )
        return out

    def _update(self, organism: Organism, step: OrganismStep, elapsed: int) -> None:
        weights = dict(organism.host.named_parameters())
        for name, units in self.units.items():
            wiring = unit_wiring(organism.host, name)
            h = _mean_abs_activation(organism, step, name).to(torch.float64)
            w_out = wiring.outgoing(weights[wiring.consumer], h.numel()).cpu().to(torch.float64)
            units.utility = self.decay_rate * units.utility + (1.0 - self.decay_rate) * h * w_out
            units.updates += 1
            units.age += elapsed

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Update utilities and ages, then reset the due number of lowest-utility mature units."""
        elapsed = organism.sgd_step - self.last_step
        self.last_step = organism.sgd_step
        self._update(organism, step, elapsed)
        corrected = self.utilities()
        actions: dict[str, LayerAction] = {}
        for name, units in self.units.items():
            mature = (units.age > self.maturity_threshold).nonzero().view(-1)
            units.pending += self.replacement_rate * mature.numel() * elapsed
            count = min(int(units.pending), mature.numel())
            if count == 0:
                continue
            units.pending -= count
            order = torch.argsort(corrected[name][mature], stable=True)
            chosen = mature[order[:count]]
            units.utility[chosen] = 0.0
            units.age[chosen] = 0
            units.updates[chosen] = 0
            actions[name] = LayerAction(reset_units=chosen)
        return actions

    def state_dict(self) -> dict[str, Any]:
        """Utilities, ages, update counts and pending replacements per layer."""
        return {
            "units": {n: u.state_dict() for n, u in self.units.items()},
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.units = {}
        for name, layer_state in state["units"].items():
            units = _Units(0)
            units.load_state_dict(layer_state)
            self.units[name] = units
        self.last_step = int(state["last_step"])
