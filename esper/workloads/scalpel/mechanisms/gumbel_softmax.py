"""Gumbel-softmax keep/drop masks with a straight-through estimator.

Each weight has a learnable keep logit ``ℓ``. Keep-versus-drop is a two-class categorical, and
the difference of the two classes' Gumbel noises is logistic, so the Gumbel-softmax sample
(Jang, Gu & Poole 2017, arXiv 1611.01144; the binary Concrete of Maddison, Mnih & Teh 2017,
arXiv 1611.00712) is

    soft = σ((ℓ + L) / τ),  L = log u − log(1 − u),  u ~ U(0, 1);   hard = 1[ℓ + L > 0].

The forward pass uses the exact 0/1 ``hard`` gate (the network computes with a truly sparse
weight); the gradient flows through ``soft`` (straight-through, Jang et al. 2017, section 2.2).
``P(hard = 1) = σ(ℓ)``, whatever ``τ``. At test time the gate is ``1[ℓ > 0]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from esper.workloads.scalpel.estimators import logistic_noise, straight_through
from esper.workloads.scalpel.mechanisms.base import MECHANISMS, Layer
from esper.workloads.scalpel.mechanisms.gated import GatedMask

__all__ = ["GumbelSoftmaxMask"]


@MECHANISMS.register("gumbel_softmax")
class GumbelSoftmaxMask(GatedMask):
    """Learnable per-weight keep logits, hard forward / soft backward.

    Args:
        tau: Temperature ``τ`` of the relaxation (per layer via ``set_temperature``).
        schedule: Annealing schedule name, or ``None`` for a constant ``tau``.
        schedule_params: Its parameters (e.g. ``{"tau0": 2.0, "rate": 1e-3}``).
        init_logit: Starting keep logit ``ℓ``; ``3.0`` keeps each weight with probability 0.95.
    """

    def __init__(
        self,
        tau: float = 1.0,
        schedule: str | None = None,
        schedule_params: Mapping[str, Any] | None = None,
        init_logit: float = 3.0,
    ) -> None:
        super().__init__(tau, schedule, schedule_params, init_logit)

    def _train_gate(self, layer: Layer, param: torch.Tensor, tau: float) -> torch.Tensor:
        noise = logistic_noise(param.shape, self.generator, param.device, param.dtype)
        z = param + noise
        soft = torch.sigmoid(z / tau)
        return straight_through(z.detach() > 0, soft)

    def _test_gate(self, layer: Layer, param: torch.Tensor) -> torch.Tensor:
        return (param.detach() > 0).to(param.dtype)

    def keep_probability(self, name: str) -> torch.Tensor:
        """``σ(ℓ)`` inside the support, 0 outside."""
        return torch.sigmoid(self.gates[name].detach()) * self.layers[name].fmask
