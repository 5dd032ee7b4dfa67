"""Initial values of regrown weights, and resetting optimizer state at touched weights.

RigL (Evci et al. 2020, arXiv 1911.11134) starts regrown connections at zero so that growing a
connection does not change the network's function; SET (Mocanu et al. 2018) draws them like a
fresh initialisation. ``keep`` leaves the stored value, which matters when pruned weights kept
training behind the mask (straight-through / DPF, Lin et al. 2020, arXiv 2006.07253): a weight
regrown because its hidden magnitude crossed a threshold should come back with that magnitude.

Optimizer state at a touched weight is stale: momentum accumulated before a prune would push the
weight off zero again, and Adam's moments of a regrown weight describe an old, different
connection. ReDo (Sokar et al. 2023) and rigl-torch both reset them; so does
:func:`reset_optimizer_state`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from esper.registry import Registry

__all__ = ["REGROW_INITS", "regrow_values", "reset_optimizer_state"]

InitFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]

REGROW_INITS: Registry[InitFn] = Registry("regrowth initialisation")


def _fan_in(weight: torch.Tensor) -> int:
    return max(1, weight[0].numel()) if weight.dim() > 1 else max(1, weight.numel())


@REGROW_INITS.register("zero")
def _zero(weight: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.zeros(index.numel(), dtype=weight.dtype, device=weight.device)


@REGROW_INITS.register("keep")
def _keep(weight: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return weight.detach().reshape(-1)[index].clone()


@REGROW_INITS.register("kaiming")
def _kaiming(weight: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # torch's default Linear/Conv init: kaiming_uniform with a = √5, i.e. U(±1/√fan_in).
    bound = 1.0 / math.sqrt(_fan_in(weight))
    u = torch.rand(index.numel(), generator=generator, device=generator.device, dtype=weight.dtype)
    return ((2.0 * u - 1.0) * bound).to(weight.device)


@REGROW_INITS.register("small_random")
def _small_random(
    weight: torch.Tensor, index: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    # N(0, (0.01 / √fan_in)²): breaks symmetry while barely changing the function.
    std = 0.01 / math.sqrt(_fan_in(weight))
    z = torch.randn(index.numel(), generator=generator, device=generator.device, dtype=weight.dtype)
    return (z * std).to(weight.device)


def regrow_values(
    init: str, weight: torch.Tensor, index: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Values for the regrown flat positions ``index`` of ``weight``, by the registered ``init``.

    Args:
        init: ``zero`` (RigL), ``keep`` (the hidden value), ``kaiming`` (torch's default init
            range ``U(±1/√fan_in)``) or ``small_random`` (``N(0, (0.01/√fan_in)²)``).
        weight: The full parameter.
        index: Flat indices being regrown.
        generator: Random stream (the Scalpel's, so regrowth is reproducible).
    """
    return REGROW_INITS[init](weight, index, generator)


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, index: torch.Tensor
) -> int:
    """Zero every per-weight state tensor of ``param`` (momentum, Adam moments) at ``index``.

    Scalar entries such as Adam's ``step`` are left alone. Returns how many state tensors
    were touched.
    """
    state = optimizer.state.get(param)
    if not state or index.numel() == 0:
        return 0
    touched = 0
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.view(-1)[index] = 0
            touched += 1
    return touched
