"""Hard Concrete gates for L0-regularised sparsity (Louizos, Welling & Kingma 2018).

"Learning Sparse Neural Networks through L0 Regularization" (arXiv 1712.01312), section 4: a
binary Concrete sample ``s`` with location ``log α`` and temperature ``β`` is stretched to the
interval ``(γ, ζ)`` with ``γ < 0 < 1 < ζ`` and clamped to ``[0, 1]``, so the gate has
probability mass exactly at 0 and at 1:

    s = σ((log u − log(1 − u) + log α) / β),  s̄ = s(ζ − γ) + γ,  z = min(1, max(0, s̄)).

The expected number of non-zero gates, differentiable in ``log α``, is

    E‖z‖₀ = Σ σ(log α − β log(−γ / ζ)),

and the test-time gate is ``min(1, max(0, σ(log α)(ζ − γ) + γ))``. Defaults follow the paper:
``γ = −0.1``, ``ζ = 1.1``, ``β = 2/3``; ``β`` is this mechanism's temperature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from esper.workloads.scalpel.estimators import logistic_noise
from esper.workloads.scalpel.mechanisms.base import MECHANISMS, Layer
from esper.workloads.scalpel.mechanisms.gated import GatedMask

__all__ = ["HardConcreteMask"]


@MECHANISMS.register("hard_concrete")
class HardConcreteMask(GatedMask):
    """Per-weight Hard Concrete gates with learnable ``log α`` and an expected-L0 penalty.

    Args:
        beta: Concrete temperature ``β`` (per layer via ``set_temperature``).
        gamma: Lower stretch limit ``γ < 0``.
        zeta: Upper stretch limit ``ζ > 1``.
        schedule: Annealing schedule for ``β``, or ``None`` for a constant ``beta``.
        schedule_params: Its parameters.
        init_log_alpha: Mean starting ``log α`` (the paper's ``log(1 − p) − log p`` for a drop
            rate ``p``); ``3.0`` gives a test-time gate of 1.
        init_std: Standard deviation of the starting ``log α`` (the paper uses 0.01).
    """

    def __init__(
        self,
        beta: float = 2.0 / 3.0,
        gamma: float = -0.1,
        zeta: float = 1.1,
        schedule: str | None = None,
        schedule_params: Mapping[str, Any] | None = None,
        init_log_alpha: float = 3.0,
        init_std: float = 0.01,
    ) -> None:
        if not (gamma < 0.0 and zeta > 1.0):
            raise ValueError(f"need gamma < 0 < 1 < zeta, got gamma={gamma}, zeta={zeta}")
        if init_std < 0:
            raise ValueError(f"init_std={init_std} must be ≥ 0")
        super().__init__(beta, schedule, schedule_params, init_log_alpha)
        self.gamma, self.zeta, self.init_std = gamma, zeta, init_std

    def _initial_gate_parameter(self, layer: Layer) -> torch.Tensor:
        noise = torch.randn(
            layer.weight.shape, generator=self.generator, device=self.generator.device
        ).to(layer.weight)
        return (self.init + self.init_std * noise).detach()

    def _stretch(self, s: torch.Tensor) -> torch.Tensor:
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def _train_gate(self, layer: Layer, param: torch.Tensor, tau: float) -> torch.Tensor:
        noise = logistic_noise(param.shape, self.generator, param.device, param.dtype)
        return self._stretch(torch.sigmoid((noise + param) / tau))

    def _test_gate(self, layer: Layer, param: torch.Tensor) -> torch.Tensor:
        return self._stretch(torch.sigmoid(param))

    def expected_l0(self, name: str | None = None) -> torch.Tensor:
        """``Σ σ(log α − β log(−γ/ζ))`` over the support of ``name`` (or of every layer)."""
        names = [name] if name is not None else list(self.layers)
        total = torch.zeros((), device=self.gates[names[0]].device)
        for n in names:
            shift = self.temperatures.get(n) * math.log(-self.gamma / self.zeta)
            prob = torch.sigmoid(self.gates[n] - shift) * self.layers[n].fmask
            total = total + prob.sum()
        return total

    def penalty(self) -> torch.Tensor:
        """The expected L0 norm of all gates (multiply by λ and add to the loss)."""
        return self.expected_l0()
