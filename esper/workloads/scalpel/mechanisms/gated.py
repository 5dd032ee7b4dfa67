"""Shared machinery of the per-weight stochastic gates (Gumbel-softmax, Hard Concrete).

Each masked tensor gets a learnable gate parameter per weight (a keep logit or ``log α``) and a
temperature. In ``train()`` mode every forward call samples a gate ``z ∈ [0, 1]``; in ``eval()``
mode the gate is deterministic. The forward pass uses ``w ⊙ z ⊙ m`` with ``m`` the support, so a
weight outside the support is zero whatever its gate; pruned weights are also zero in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from esper.workloads.scalpel.mechanisms.base import Layer
from esper.workloads.scalpel.mechanisms.tempered import Temperatures, TemperedMechanism
from esper.workloads.scalpel.regrowth import reset_optimizer_state

__all__ = ["GatedMask"]


class GatedMask(TemperedMechanism):
    """Base of per-weight stochastic gates; subclasses define the two gates.

    Args:
        tau: Starting temperature.
        schedule: Annealing schedule name (or ``None`` for constant ``tau``).
        schedule_params: Its parameters.
        init: Initial gate parameter at every weight (also given to regrown weights).
    """

    overrides_forward = True

    def __init__(
        self,
        tau: float,
        schedule: str | None,
        schedule_params: Mapping[str, Any] | None,
        init: float,
    ) -> None:
        super().__init__()
        self.temperatures = Temperatures(tau, schedule, schedule_params)
        self.init = float(init)
        self.gates: dict[str, torch.Tensor] = {}

    def _setup(self) -> None:
        self.temperatures.add(self.layers)
        for name, layer in self.layers.items():
            value = self._initial_gate_parameter(layer)
            self.gates[name] = value.requires_grad_(True)

    def _initial_gate_parameter(self, layer: Layer) -> torch.Tensor:
        return torch.full_like(layer.weight, self.init, requires_grad=False).detach()

    def _train_gate(self, layer: Layer, param: torch.Tensor, tau: float) -> torch.Tensor:
        raise NotImplementedError

    def _test_gate(self, layer: Layer, param: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gate(self, name: str, training: bool = False) -> torch.Tensor:
        """A gate for ``name`` (sampled if ``training``), zero outside the support."""
        layer = self.layers[name]
        param = self.gates[name]
        if training:
            return self._train_gate(layer, param, self.temperatures.get(name)) * layer.fmask
        return self._test_gate(layer, param) * layer.fmask

    def effective_weight(self, layer: Layer) -> torch.Tensor:
        return layer.weight * self.gate(layer.name, training=layer.module.training)

    def effective_mask(self, layer: Layer) -> torch.Tensor:
        with torch.no_grad():
            return (self.gate(layer.name) > 0) & layer.mask

    def squashed_weight(self, layer: Layer) -> torch.Tensor:
        with torch.no_grad():
            return layer.weight * self.gate(layer.name)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.gates.values())

    @torch.no_grad()
    def on_regrow(self, layer: Layer, index: torch.Tensor) -> None:
        param = self.gates[layer.name]
        param.view(-1)[index] = self.init
        if self.optimizer is not None:
            reset_optimizer_state(self.optimizer, param, index)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "gates": {n: g.detach().clone() for n, g in self.gates.items()},
            "temperatures": self.temperatures.state_dict(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for name, value in state["gates"].items():
            self.gates[name].copy_(value)
        self.temperatures.load_state_dict(state["temperatures"])
