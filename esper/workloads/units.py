"""Unit re-initialisation, as continual backprop and ReDo do it.

Continual backprop (Dohare et al., Nature 2024; ``lop/algos/cbp_linear.py``) and ReDo (Sokar
et al. 2023, arXiv 2302.12902; dopamine ``labs/redo/weight_recyclers.py``) revive a hidden unit
(a neuron, or a channel of a convolution) by

1. drawing fresh *incoming* weights from the layer's initial distribution (torch's default
   Kaiming-uniform, ``U(±1/√fan_in)``) and zeroing its bias (``cbp_linear``'s
   ``in_layer.bias[features] *= 0``),
2. zeroing its *outgoing* weights in the consuming layer, so the network's function does not
   jump (the new unit starts silent and is recruited by gradient descent), and
3. resetting the optimizer's per-weight state (momentum, Adam moments) at every touched weight.

A unit followed by a LayerNorm (an MLP host with ``layer_norm``) also gets its LayerNorm scale
back to 1 and shift to 0, as ``cbp_linear`` resets its ``ln_layer``.

Here the unit's fresh incoming weights are drawn only on the layer's mask support: a sparse
unit is revived with its current connectivity. ``cbp_linear`` also moves the unit's mean
contribution into the consuming layer's bias; that needs the unit's running mean activation,
which the caller (the CBP policy) does not hand over, so it is not done here.

:func:`unit_wiring` says which weights a unit owns; the output layer's units and the
transformer's residual-stream layers have no single consumer and cannot be reset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from esper.workloads.hosts import CNN, MLP, TinyTransformer
from esper.workloads.scalpel import Scalpel, reset_optimizer_state

__all__ = ["UnitWiring", "reset_units", "unit_wiring"]


@dataclass(frozen=True)
class UnitWiring:
    """The weights a hidden unit of one layer owns.

    Attributes:
        layer: The layer's weight (full parameter name); unit ``u`` is its row ``u``.
        bias: The layer's bias, or ``None``.
        consumer: The consuming layer's weight; unit ``u`` owns its columns (dim 1)
            ``u·width … (u+1)·width − 1``.
        width: Columns of ``consumer`` per unit (1, or the pooled spatial size when the last
            convolution feeds the first Linear through a flatten).
        norm: The LayerNorm module right after the layer, whose entry ``u`` of scale and shift
            unit ``u`` owns, or ``None``.
    """

    layer: str
    bias: str | None
    consumer: str
    width: int
    norm: str | None = None

    def outgoing(self, consumer_weight: torch.Tensor, units: int) -> torch.Tensor:
        """``Σ |w_out|`` per unit, shape ``(units,)`` (the CBP contribution's weight factor)."""
        per_column = (
            consumer_weight.detach().abs().transpose(0, 1).reshape(consumer_weight.shape[1], -1)
        )
        return per_column.sum(dim=1).view(units, self.width).sum(dim=1)


def _module_name(layer: str) -> str:
    if not layer.endswith(".weight"):
        raise ValueError(f"{layer!r} is not a layer weight (expected a name ending in '.weight')")
    return layer[: -len(".weight")]


def _consumer(host: nn.Module, module: str) -> tuple[str, int]:
    """The consuming module of ``module`` and the consumer columns per unit."""
    if isinstance(host, MLP):
        names = [f"layers.{i}" for i in range(len(host.layers))]
        if module in names[:-1]:
            return names[names.index(module) + 1], 1
    elif isinstance(host, CNN):
        convs = [
            f"features.{i}"
            for i, m in enumerate(host.features)
            if isinstance(m, (nn.Conv1d, nn.Conv2d))
        ]
        if module in convs[:-1]:
            return convs[convs.index(module) + 1], 1
        if convs and module == convs[-1]:
            out_channels = cast(nn.Conv1d, host.features[int(module.split(".")[1])]).out_channels
            return "fc", host.fc.in_features // out_channels
        if module == "fc":
            return "head", 1
    elif isinstance(host, TinyTransformer):
        parts = module.split(".")
        if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "ff1":
            return f"blocks.{parts[1]}.ff2", 1
    else:
        raise TypeError(
            f"reset_units knows the wiring of MLP, CNN and TinyTransformer hosts, "
            f"not {type(host).__name__}"
        )
    raise ValueError(
        f"units of {module!r} cannot be reset: only hidden layers with one consuming layer "
        f"can (MLP hidden layers, CNN convolutions and fc, transformer ff1), never the output "
        f"layer or the transformer's residual stream"
    )


def unit_wiring(host: nn.Module, layer: str) -> UnitWiring:
    """Which weights the output units of ``layer`` own.

    Raises:
        ValueError: ``layer`` is the output layer, or a layer with no single consumer.
        TypeError: a host whose wiring is unknown.
    """
    module = _module_name(layer)
    consumer, width = _consumer(host, module)
    owner = host.get_submodule(module)
    if not isinstance(owner, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        raise ValueError(f"{layer!r} is not the weight of a Linear or Conv layer")
    bias = f"{module}.bias" if owner.bias is not None else None
    norm = None
    if isinstance(host, MLP) and host.norms is not None:  # norms.i follows layers.i
        norm = "norms." + module.removeprefix("layers.")
    return UnitWiring(layer, bias, f"{consumer}.weight", width, norm)


@torch.no_grad()
def reset_units(
    host: nn.Module,
    scalpel: Scalpel,
    optimizer: torch.optim.Optimizer,
    layer: str,
    units: torch.Tensor | Sequence[int],
    generator: torch.Generator,
) -> int:
    """Re-initialise output units ``units`` of ``layer`` (CBP, ReDo).

    Incoming weights on the mask support are drawn from ``U(±1/√fan_in)`` (torch's default
    Linear/Conv init), the bias is zeroed, a following LayerNorm's scale and shift are set to 1
    and 0, the consuming layer's columns of the units are zeroed, and the optimizer's per-weight
    state is reset at all of them.

    Args:
        host: The host network.
        scalpel: Its masks (incoming weights are drawn only where ``scalpel.mask(layer)``).
        optimizer: The host's optimizer.
        layer: Full weight name of the layer whose units are reset.
        units: Output-unit indices (rows of the weight), on any device; duplicates count once.
        generator: Random stream of the fresh weights, a CPU generator: the weights are drawn on
            the CPU and moved to the host's device (the same numbers on every device).

    Returns:
        How many distinct units were reset.

    Raises:
        IndexError: a unit index out of range.
        ValueError: the layer's units cannot be reset (see :func:`unit_wiring`).
    """
    wiring = unit_wiring(host, layer)
    params = dict(host.named_parameters())
    weight = params[layer]
    device = weight.device
    idx = torch.unique(torch.as_tensor(units, dtype=torch.int64, device=device).view(-1))
    if idx.numel() == 0:
        return 0
    n_units = weight.shape[0]
    if int(idx.min()) < 0 or int(idx.max()) >= n_units:
        raise IndexError(f"units of {layer!r} must lie in [0, {n_units}); got {idx.tolist()}")
    fan_in = weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    rows = weight.view(n_units, fan_in)
    mask = scalpel.mask(layer).view(n_units, fan_in)[idx] if layer in scalpel.names else None
    fresh = (2.0 * torch.rand(idx.numel(), fan_in, generator=generator) - 1.0) * bound
    fresh = fresh.to(dtype=weight.dtype, device=device)
    if mask is not None:
        fresh = torch.where(mask, fresh, rows[idx])
    rows[idx] = fresh
    flat_rows = (idx.view(-1, 1) * fan_in + torch.arange(fan_in, device=device)).view(-1)
    reset_optimizer_state(optimizer, weight, flat_rows)
    if wiring.bias is not None:
        bias = params[wiring.bias]
        bias[idx] = 0.0
        reset_optimizer_state(optimizer, bias, idx)
    if wiring.norm is not None:
        for suffix, value in (("weight", 1.0), ("bias", 0.0)):
            affine = params[f"{wiring.norm}.{suffix}"]
            affine[idx] = value
            reset_optimizer_state(optimizer, affine, idx)
    consumer = params[wiring.consumer]
    columns = (idx.view(-1, 1) * wiring.width + torch.arange(wiring.width, device=device)).view(-1)
    consumer[:, columns] = 0.0
    touched = torch.zeros(consumer.shape, dtype=torch.bool, device=device)
    touched[:, columns] = True
    reset_optimizer_state(optimizer, consumer, touched.view(-1).nonzero().view(-1))
    return int(idx.numel())
