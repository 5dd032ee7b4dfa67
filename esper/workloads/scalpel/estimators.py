"""Noise sources and straight-through gradient estimators shared by the mask mechanisms.

A straight-through estimator (Bengio, Léonard & Courville 2013, arXiv 1308.3432) uses one value
in the forward pass and differentiates another in the backward pass. The Scalpel needs two:

* :func:`straight_through` returns an exact hard 0/1 gate forward and passes the gradient to a
  soft relaxation (the Gumbel-softmax estimator of Jang, Gu & Poole 2017, arXiv 1611.01144);
* :func:`masked_straight_through` computes ``w ⊙ m`` forward while the dense ``w`` receives the
  whole gradient, the "virtual" dense gradient of dynamic pruning with feedback (Lin et al. 2020,
  arXiv 2006.07253): ``θ ← θ − η ∇_{w⊙m} L``, so pruned weights keep moving.

Both are custom autograd functions so the forward value is exactly the hard value (``h + s −
sg(s)`` would be off by rounding for ``h = 1``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["gumbel_noise", "logistic_noise", "masked_straight_through", "straight_through"]

_TINY = 1e-10


def _uniform(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``U(0, 1)`` drawn on the generator's device (a CPU generator cannot drive a CUDA
    draw), clamped away from 0 and 1."""
    where = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=where, dtype=dtype)
    return u.clamp_(_TINY, 1.0 - 1e-7)


def gumbel_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gumbel(0, 1) samples ``g = −log(−log u)``, ``u ~ U(0, 1)`` (Gumbel 1954).

    Args:
        shape: Shape of the sample.
        generator: Random stream. The sample is computed on its device (the CPU for the
            Scalpel's and the policies' generators) and then moved to ``device``, so CPU and
            CUDA runs draw the same noise.
        device: Device of the sample (default: the generator's, or CPU).
        dtype: Floating dtype of the sample.
    """
    noise = -torch.log(-torch.log(_uniform(shape, generator, device, dtype)))
    return noise.to(device) if device is not None else noise


def logistic_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard logistic samples ``log u − log(1 − u)``: the difference of two Gumbel samples.

    A binary Gumbel-softmax (the binary Concrete of Maddison, Mnih & Teh 2017, arXiv 1611.00712)
    needs only this one number per weight: ``keep ⇔ logit + L > 0``. Arguments as
    :func:`gumbel_noise` (computed on the generator's device, then moved to ``device``).
    """
    u = _uniform(shape, generator, device, dtype)
    noise = torch.log(u) - torch.log1p(-u)
    return noise.to(device) if device is not None else noise


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return hard.to(soft.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad


class _MaskedStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` (cast to ``soft``'s dtype) in the forward pass, ``∂/∂soft`` in the backward.

    Args:
        hard: The discrete value, e.g. a boolean keep mask; receives no gradient.
        soft: Its differentiable relaxation, of the same shape.
    """
    out: torch.Tensor = _StraightThrough.apply(hard, soft)
    return out


def masked_straight_through(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight ⊙ mask`` forward; the unmasked gradient reaches every entry of ``weight``.

    Args:
        weight: The dense weight.
        mask: A float 0/1 mask of the same shape (no gradient).
    """
    out: torch.Tensor = _MaskedStraightThrough.apply(weight, mask)
    return out
