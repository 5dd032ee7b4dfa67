"""Forward-mode helpers for Hessian-vector products (forward over reverse).

PyTorch's forward-mode rules are general; a few common cases cost far more than needed:

- a matrix product whose input carries no tangent (the data entering the first layer) gets
  a materialised zero tangent, and two full-size products are spent on it;
- the primal weight gradient of such a layer is computed though only its tangent is used;
- an absent tangent elsewhere becomes an "efficient zero tensor" whose arithmetic runs
  through slow Python reference implementations, as does the rule for ``nll_loss``;
- the fused CPU attention kernel has no forward-mode rule at all.

:class:`HvpMode` routes the forward pass around these with small autograd functions whose
forward-mode derivatives are written out. Internal to :mod:`.hessian`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = [
    "CrossEntropy",
    "CrossEntropyGrad",
    "HvpMode",
    "LinearNoInputTangent",
    "WeightGradTangentOnly",
    "attention_math",
    "cross_entropy_forward_ad",
    "cross_entropy_func",
]


class WeightGradTangentOnly(torch.autograd.Function):
    """The tangent of a weight gradient ``gᵀa`` for an ``a`` without tangent, i.e.
    ``ġᵀa``, without computing the primal gradient itself.

    A Hessian-vector product needs only the tangent of the gradient; the primal weight
    gradient is a leaf of the backward graph that nothing else reads, so its product (the
    size of the layer's whole weight-gradient computation) is skipped and zeros stand in.
    """

    @staticmethod
    def forward(ctx: Any, g: Tensor, a: Tensor) -> Tensor:
        ctx.set_materialize_grads(False)  # no zero tangent for ``a``
        ctx.save_for_forward(a)
        return g.new_zeros(g.shape[-1], a.shape[-1])

    @staticmethod
    def jvp(ctx: Any, g_t: Tensor | None, a_t: Tensor | None) -> Tensor:
        (a,) = ctx.saved_tensors
        if g_t is None:
            raise RuntimeError("the output gradient of a probed layer has no tangent")
        return g_t.flatten(0, -2).t() @ a.flatten(0, -2)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:
        raise RuntimeError("Hessian-vector products do not support a further backward pass")


class LinearNoInputTangent(torch.autograd.Function):
    """``F.linear`` whose input carries no tangent, in a Hessian-vector product.

    Nothing upstream of such an input is probed, so its gradient is never needed and is not
    returned; the weight gradient's tangent comes from :class:`WeightGradTangentOnly`."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.set_materialize_grads(False)  # no zero tangent for ``a``
        ctx.save_for_backward(a)
        ctx.save_for_forward(a)
        ctx.has_bias = bias is not None
        return F.linear(a, weight, bias)

    @staticmethod
    def jvp(ctx: Any, a_t: Tensor | None, w_t: Tensor | None, b_t: Tensor | None) -> Tensor:
        (a,) = ctx.saved_tensors
        assert w_t is not None
        return F.linear(a, w_t, b_t)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor, Tensor | None]:
        (a,) = ctx.saved_tensors
        g_weight = WeightGradTangentOnly.apply(g, a)
        g_bias = g.flatten(0, -2).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return None, g_weight, g_bias


class CrossEntropyGrad(torch.autograd.Function):
    """``∂ℓ/∂z = (softmax(z) − onehot(y)) · g`` with its forward-mode derivative written out:
    ``(p ⊙ (ż − ⟨p, ż⟩)) · g + (p − onehot(y)) · ġ``."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, g: Tensor, y: Tensor) -> Tensor:
        ctx.set_materialize_grads(False)
        p = torch.softmax(z, dim=1)
        residual = p.scatter_add(1, y[:, None], -torch.ones_like(y[:, None], dtype=p.dtype))
        ctx.save_for_forward(p, residual, g)
        return residual * g[:, None]

    @staticmethod
    def jvp(ctx: Any, z_t: Tensor | None, g_t: Tensor | None, y_t: None) -> Tensor:
        p, residual, g = ctx.saved_tensors
        out = torch.zeros_like(p)
        if z_t is not None:
            out += p * (z_t - (p * z_t).sum(1, keepdim=True)) * g[:, None]
        if g_t is not None:
            out += residual * g_t[:, None]
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, None, None]:
        raise RuntimeError("Hessian-vector products do not support a further backward pass")


class CrossEntropy(torch.autograd.Function):
    """Per-sample cross-entropy whose backward is :class:`CrossEntropyGrad`: a few fused
    steps instead of PyTorch's generic forward-mode path through ``log_softmax`` and
    ``nll_loss`` (which costs more than a small layer's products)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, y: Tensor) -> Tensor:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, y)
        ctx.save_for_forward(z, y)
        return torch.logsumexp(z, dim=1) - z.gather(1, y[:, None]).squeeze(1)

    @staticmethod
    def jvp(ctx: Any, z_t: Tensor | None, y_t: None) -> Tensor:
        z, y = ctx.saved_tensors
        assert z_t is not None
        p = torch.softmax(z, dim=1)
        return (p * z_t).sum(1) - z_t.gather(1, y[:, None]).squeeze(1)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        z, y = ctx.saved_tensors
        return CrossEntropyGrad.apply(z, g, y), None


def cross_entropy_forward_ad(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy for forward-AD Hessian-vector products (same values and
    derivatives as ``F.cross_entropy``)."""
    if logits.dim() == 2 and not targets.is_floating_point():
        result: Tensor = CrossEntropy.apply(logits, targets)
        return result
    return F.cross_entropy(logits, targets, reduction="none")


def cross_entropy_func(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy for ``torch.func`` (``logsumexp(z) − z_y``: PyTorch's
    forward-mode rule for ``nll_loss`` goes through a slow reference implementation)."""
    if logits.dim() == 2 and not targets.is_floating_point():
        return torch.logsumexp(logits, dim=1) - logits.gather(1, targets[:, None]).squeeze(1)
    return F.cross_entropy(logits, targets, reduction="none")


def attention_math(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` from basic operations, which forward mode supports
    (the fused CPU kernel does not)."""
    if dropout_p > 0.0 or enable_gqa:
        raise NotImplementedError("Hessian sensing supports attention without dropout or GQA")
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if is_causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return scores.softmax(dim=-1) @ v


class HvpMode(TorchFunctionMode):
    """Runs a forward pass for a Hessian-vector product.

    Swaps in forward-mode-friendly attention; with ``substitutes`` (parameter id → dual
    tensor), feeds every operation the dual version of each parameter it reads, so the
    module itself is left untouched (cheaper than ``functional_call``'s reparametrisation);
    and routes each Linear whose input has no tangent through
    :class:`LinearNoInputTangent`.
    """

    def __init__(self, substitutes: Mapping[int, Tensor] | None = None) -> None:
        super().__init__()
        self.substitutes = substitutes or {}

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        sub = self.substitutes
        if sub:
            args = [sub.get(id(a), a) if isinstance(a, Tensor) else a for a in args]
            kwargs = {
                k: sub.get(id(v), v) if isinstance(v, Tensor) else v for k, v in kwargs.items()
            }
        if func is F.scaled_dot_product_attention:
            return attention_math(*args, **kwargs)
        if func is F.linear and sub:
            a = args[0] if args else kwargs["input"]
            w = args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if fwAD.unpack_dual(a).tangent is None and fwAD.unpack_dual(w).tangent is not None:
                return LinearNoInputTangent.apply(a, w, b)
        return func(*args, **kwargs)
