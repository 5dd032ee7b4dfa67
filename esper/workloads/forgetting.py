"""Fisher-guided selective forgetting (FGSF): shrink and perturb the most rigid weights.

When the FGSF trigger fires for a layer (its Fisher trace has risen and saturated while its
gradient signal-to-noise ratio falls: the layer has locked in what it learned and stopped
learning), a surgeon may loosen the weights that hold it most rigidly: the active weights with
the highest Fisher diagonal (:func:`esper.workloads.sensors.rigid_weights`). Loosening follows
shrink-and-perturb (Ash & Adams, NeurIPS 2020, "On Warm-Starting Neural Network Training"):
``w ← λ·w + p·ε`` with ``ε`` drawn from the layer's initial distribution, restricted here to the
rigid weights, whose optimizer state is cleared. Their mask state does not change, so the
density budget is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PERTURB", "SHRINK", "shrink_perturb"]

SHRINK = 0.4
"""``λ``: the fraction of each rigid weight kept (the paper sweeps it; 0.4 is our default)."""

PERTURB = 0.1
"""``p``: the scale of the fresh initial-distribution draw added (our default)."""


def shrink_perturb(
    host: nn.Module,
    optimizer: torch.optim.Optimizer,
    layer: str,
    indices: torch.Tensor | Sequence[int],
    generator: torch.Generator,
    shrink: float = SHRINK,
    perturb: float = PERTURB,
) -> int:
    """Shrink and perturb the weights ``indices`` (flat) of ``layer`` in place.

    ``ε`` is drawn on the CPU from ``U(±1/√fan_in)`` (torch's default Linear/Conv init) with
    ``generator``, so every device gets the same numbers; the optimizer's per-weight state
    (momentum, Adam moments) is zeroed at the indices.

    Returns:
        How many distinct weights were changed.

    Raises:
        ValueError: ``shrink`` or ``perturb`` outside ``[0, 1]``.
        IndexError: an index outside the layer.
    """
    if not (0.0 <= shrink <= 1.0 and 0.0 <= perturb <= 1.0):
        raise ValueError(f"shrink={shrink} and perturb={perturb} must lie in [0, 1]")
    weight = dict(host.named_parameters())[layer]
    idx = torch.unique(torch.as_tensor(indices, dtype=torch.int64).view(-1).cpu())
    if idx.numel() == 0:
        return 0
    if int(idx.min()) < 0 or int(idx.max()) >= weight.numel():
        raise IndexError(f"weights of {layer!r} lie in [0, {weight.numel()}); got {idx.tolist()}")
    bound = 1.0 / math.sqrt(weight[0].numel())
    eps = (torch.rand(idx.numel(), generator=generator) * 2 - 1) * bound
    at = idx.to(weight.device)
    with torch.no_grad():
        flat = weight.view(-1)
        flat[at] = shrink * flat[at] + perturb * eps.to(weight.device, weight.dtype)
        for value in optimizer.state.get(weight, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                value.view(-1)[at] = 0
    return int(idx.numel())
