"""Multiply-accumulate counts of one forward example, dense and under masks.

Counts are multiply-accumulates (MACs; one MAC is two FLOPs in the other convention) for one
example, the cost measure of the sparse-training literature (RigL, Evci et al. 2020, appendix
H, counts the FLOPs of sparse layers as proportional to their non-zeros):

* Linear: ``positions · n_in · n_out`` dense, ``positions · nnz(W)`` sparse, where ``positions``
  is the number of vectors the layer is applied to (tokens, or 1);
* Conv: ``output positions · c_out · c_in / groups · k`` dense (per output position, every
  kernel weight is one MAC), ``output positions · nnz(W)`` sparse;
* self-attention: the four projections as Linear layers on every token, plus the score and
  value products ``2 · T² · d_head`` per active head (``T`` tokens). A head whose
  ``head_gate`` is zero is inactive: its score/value products and its rows of q, k, v (columns of
  out) are not counted in the sparse total.

Biases, activations, normalisation and pooling are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from esper.workloads.hosts import MultiHeadSelfAttention

__all__ = ["FlopReport", "LayerFlops", "flops"]


@dataclass(frozen=True)
class LayerFlops:
    """MACs of one layer (or one attention module's score/value products).

    Attributes:
        dense: MACs with every weight and head active.
        sparse: MACs counting only kept weights and active heads.
    """

    dense: int
    sparse: int


@dataclass(frozen=True)
class FlopReport:
    """MACs per forward example.

    Attributes:
        dense: Total dense MACs.
        sparse: Total MACs under the masks.
        per_layer: By parameter name (``"layers.0.weight"``) and, for attention score/value
            products, ``"<module>.attention"``, in forward order.
    """

    dense: int
    sparse: int
    per_layer: dict[str, LayerFlops] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``sparse / dense``."""
        return self.sparse / self.dense if self.dense else 1.0


def _head_mask(mask: torch.Tensor, dead: list[int], d_head: int, dim: int) -> torch.Tensor:
    mask = mask.clone()
    for h in dead:
        mask.narrow(dim, h * d_head, d_head).fill_(False)
    return mask


def flops(
    model: nn.Module,
    input_shape: Sequence[int],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> FlopReport:
    """Dense and masked MACs of one forward example of ``model``.

    Runs one forward pass on zeros, in ``eval()`` mode and without gradients (so stochastic
    masks use their deterministic test-time gates and no random stream advances), recording the
    shapes each Linear, Conv and attention module sees.

    Args:
        model: The network.
        input_shape: Shape of one example, without the batch dimension.
        masks: Boolean masks by parameter name (e.g. ``Scalpel.effective_masks()``); tensors
            without one count as dense.
    """
    masks = dict(masks or {})
    names = {id(m): n for n, m in model.named_modules()}
    records: list[tuple[str, nn.Module, Any, Any]] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        gate = getattr(module, "head_gate", None)
        extra = int((gate != 0).sum()) if isinstance(gate, torch.Tensor) else None
        records.append((names[id(module)], module, args[0].shape, (output.shape, extra)))

    types = (nn.Linear, nn.Conv1d, nn.Conv2d, MultiHeadSelfAttention)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    dtype = param.dtype if param is not None else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    dead_heads: dict[str, tuple[list[int], int]] = {}
    for name, module, _, _ in records:
        if isinstance(module, MultiHeadSelfAttention):
            gate = module.head_gate.detach()
            dead = (gate == 0).nonzero().view(-1).tolist()
            for proj in ("q", "k", "v", "out"):
                dead_heads[f"{name}.{proj}"] = (dead, module.d_head)

    per_layer: dict[str, LayerFlops] = {}
    for name, module, in_shape, (out_shape, active) in records:
        if isinstance(module, MultiHeadSelfAttention):
            tokens, heads = in_shape[1], module.heads
            per_head = 2 * tokens * tokens * module.d_head
            key = f"{name}.attention"
            per_layer[key] = LayerFlops(heads * per_head, (active or 0) * per_head)
            continue
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        pname = f"{name}.weight" if name else "weight"
        mask = masks.get(pname)
        mask = (
            mask.to(torch.bool) if mask is not None else torch.ones_like(weight, dtype=torch.bool)
        )
        if name in dead_heads:
            dead, d_head = dead_heads[name]
            dim = 1 if name.endswith(".out") else 0
            mask = _head_mask(mask, dead, d_head, dim)
        if isinstance(module, nn.Linear):
            positions = math.prod(out_shape[1:-1])
        else:
            positions = math.prod(out_shape[2:])
        dense = positions * weight.numel()
        sparse = positions * int(mask.sum())
        prev = per_layer.get(pname)
        if prev is not None:  # a module applied more than once
            dense, sparse = dense + prev.dense, sparse + prev.sparse
        per_layer[pname] = LayerFlops(dense, sparse)
    total_dense = sum(v.dense for v in per_layer.values())
    total_sparse = sum(v.sparse for v in per_layer.values())
    return FlopReport(total_dense, total_sparse, per_layer)
