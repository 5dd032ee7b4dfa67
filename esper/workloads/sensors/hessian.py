"""Hessian sensitivity: Hutchinson estimates of each layer's Hessian trace and diagonal.

For a Rademacher probe ``v`` (entries ±1), ``E[vᵀHv] = tr(H)`` and ``E[v ⊙ Hv] = diag(H)``
(Hutchinson 1989, "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines"; Bekas, Kokiopoulou & Saad 2007 for the diagonal; used for layer
sensitivity by HAWQ-V2, Dong et al. 2020, arXiv 1911.03852). One probe over all prunable
tensors at once gives every layer's estimate: the cross-layer terms of ``v_lᵀ(Hv)_l`` vanish
in expectation.

Hessian-vector products are forward-over-reverse: the gradient is computed with the weights
carrying the probe as a forward-mode tangent, so its tangent is ``Hv`` (Pearlmutter 1994,
"Fast exact multiplication by the Hessian"). ``torch.func.jvp(torch.func.grad(f))`` does
this, but PyTorch's forward-mode formula for a matrix product materialises a zero tangent
for an input that has none (the data), which costs two needless products in the first
layer, the largest one in most hosts. The default ``method="forward_ad"`` therefore runs the
same computation with ``torch.autograd.forward_ad`` and routes each Linear whose input has
no tangent through a small autograd function that skips those products; ``method="func"``
is the plain ``torch.func`` version. The loss is the batch mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from esper.workloads.sensors._forward_mode import (
    HvpMode,
    cross_entropy_forward_ad,
    cross_entropy_func,
)
from esper.workloads.sensors.capture import prunable_parameters
from esper.workloads.sensors.gradients import LossFn, check_masks

__all__ = ["HessianStats", "hessian_vector_product", "hutchinson", "rademacher"]

_ONE = 0x3F800000  # the bits of float32 1.0
_SIGN = -(1 << 31)  # the sign bit of an int32
_PROBE_ELEMENTS = 1 << 22  # probe entries batched at once by method="func"


def rademacher(
    numel: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``numel`` independent ±1 entries on ``device``, from 32 random bits per word.

    Each bit is shifted into the sign position of float32 ``1.0``'s bit pattern: several
    times faster than ``randint(0, 2)`` for large layers. The words are drawn on the CPU (from
    ``generator``, a CPU generator), so a CUDA run probes with the same signs as a CPU run;
    only they cross to the device (a 32nd of the probe's size) and are expanded there, so a
    GPU reading neither builds the probe on the host nor copies it over.
    """
    words = torch.randint(
        -(1 << 31), (1 << 31) - 1, ((numel + 31) // 32, 1), generator=generator, dtype=torch.int32
    ).to(device)
    shifts = torch.arange(31, -1, -1, dtype=torch.int32, device=words.device)
    signs = (words << shifts).view(-1)[:numel].bitwise_and_(_SIGN)
    return signs.bitwise_or_(_ONE).view(torch.float32).to(dtype)


@dataclass(frozen=True)
class HessianStats:
    """Hutchinson estimates for one prunable tensor.

    Attributes:
        trace: Estimate of the trace of this tensor's diagonal Hessian block, over its
            active weights (all without a mask).
        diagonal: Estimate of the Hessian diagonal, dense.
        probes: Number of Rademacher probes averaged.
    """

    trace: float
    diagonal: Tensor
    probes: int


def hessian_vector_product(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    vectors: Mapping[str, Tensor],
    *,
    loss_fn: LossFn | None = None,
    method: Literal["forward_ad", "func"] = "forward_ad",
) -> dict[str, Tensor]:
    """``Hv`` of the mean loss for the parameters named in ``vectors`` (others held fixed).

    Args:
        model: The network.
        x: Inputs.
        y: Targets.
        vectors: One tangent per parameter, of its shape.
        loss_fn: Per-sample loss (default: cross-entropy).
        method: ``"forward_ad"`` (default, fastest) or ``"func"`` (``torch.func``).
    """
    named = dict(model.named_parameters())
    params = {n: named[n].detach() for n in vectors}
    if method == "func":
        func_loss = loss_fn or cross_entropy_func

        def loss(p: dict[str, Tensor]) -> Tensor:
            with HvpMode():
                out = functional_call(model, p, (x,))
            return func_loss(out, y).mean()

        with torch.no_grad():
            hv: dict[str, Tensor] = jvp(grad(loss), (params,), (dict(vectors),))[1]
        return dict(hv)
    if method != "forward_ad":
        raise ValueError(f"unknown HVP method {method!r}; valid methods: forward_ad, func")
    loss_fn = loss_fn or cross_entropy_forward_ad
    with fwAD.dual_level():
        # Every parameter gets a dense tangent (zero where not probed) and the backward pass
        # a dual seed: an absent tangent would become an "efficient zero tensor", whose
        # arithmetic runs through slow Python reference implementations.
        with warnings.catch_warnings():  # torch loads TorchScript decompositions once
            warnings.filterwarnings("ignore", ".*torch.jit.script", DeprecationWarning)
            duals = {
                n: fwAD.make_dual(p.requires_grad_(True), vectors[n]) for n, p in params.items()
            }
        fixed = {
            n: fwAD.make_dual(p.detach(), torch.zeros_like(p))
            for n, p in named.items()
            if n not in duals and p.is_floating_point()
        }
        substitutes = {id(named[n]): d for n, d in (fixed | duals).items()}
        with HvpMode(substitutes):
            out = model(x)
        mean_loss = loss_fn(out, y).mean()
        primal = fwAD.unpack_dual(mean_loss).primal
        seed = fwAD.make_dual(torch.ones_like(primal), torch.zeros_like(primal))
        grads = torch.autograd.grad(mean_loss, list(duals.values()), seed, allow_unused=True)
        result = {}
        for n, g in zip(duals, grads, strict=True):
            tangent = None if g is None else fwAD.unpack_dual(g).tangent
            result[n] = torch.zeros_like(params[n]) if tangent is None else tangent.detach()
    return result


def hutchinson(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    params: Sequence[str] | None = None,
    probes: int = 1,
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    masks: Mapping[str, Tensor] | None = None,
    method: Literal["forward_ad", "func"] = "forward_ad",
    per_layer: bool = False,
) -> dict[str, HessianStats]:
    """Hutchinson trace and diagonal estimates per prunable tensor, one HVP per probe.

    With ``per_layer``, every probe is applied to one layer at a time (the others get a zero
    tangent): one HVP per layer and probe, ``L`` times the cost, but each layer's estimate
    ``v_lᵀ H_ll v_l`` is free of the cross-layer terms ``v_lᵀ H_lm v_m`` that a shared probe
    adds. They vanish in expectation but can dominate the variance of a per-layer trace.

    With the default method each probe costs about two plain training steps; ``"func"``
    batches many probes into one ``vmap``-ed call (faster for many probes on small models).

    Args:
        model: The network.
        x: Inputs.
        y: Targets.
        params: Parameter names (default: :func:`prunable_parameters`).
        probes: Rademacher probes to average.
        generator: Source of the probes (seed it for reproducibility).
        loss_fn: Per-sample loss (default: cross-entropy).
        masks: Boolean masks; traces are summed over active weights only.
        method: Hessian-vector product method, see :func:`hessian_vector_product`.
    """
    if probes < 1:
        raise ValueError(f"probes must be at least 1, got {probes}")
    named = dict(model.named_parameters())
    names = list(params) if params is not None else list(prunable_parameters(model))
    checked = check_masks({n: named[n] for n in names}, masks)
    sizes = [named[n].numel() for n in names]
    first = named[names[0]]
    flat_diagonal = torch.zeros(sum(sizes), dtype=first.dtype, device=first.device)
    diagonal = {
        n: d.view(named[n].shape) for n, d in zip(names, flat_diagonal.split(sizes), strict=True)
    }
    if per_layer:  # one block probe per layer: no cross-layer terms
        for _ in range(probes):
            flat = rademacher(sum(sizes), generator, first.dtype, first.device)
            for n, v in zip(names, flat.split(sizes), strict=True):
                block = {m: torch.zeros_like(named[m]) for m in names}
                block[n] = v.view(named[n].shape)
                hv = hessian_vector_product(model, x, y, block, loss_fn=loss_fn, method=method)
                diagonal[n].addcmul_(block[n], hv[n])
    elif method == "func":  # batches of probes through vmap
        per_call = max(1, _PROBE_ELEMENTS // sum(sizes))
        for start in range(0, probes, per_call):
            count = min(per_call, probes - start)
            flat = torch.stack(
                [rademacher(sum(sizes), generator, first.dtype, first.device) for _ in range(count)]
            )
            vectors = {
                n: v.reshape(count, *named[n].shape)
                for n, v in zip(names, flat.split(sizes, dim=1), strict=True)
            }
            hv = _hvp_func_batched(model, x, y, vectors, loss_fn or cross_entropy_func)
            for n in names:
                diagonal[n].add_((vectors[n] * hv[n]).sum(0))
    else:
        for _ in range(probes):
            flat = rademacher(sum(sizes), generator, first.dtype, first.device)
            vectors = {
                n: v.view(named[n].shape) for n, v in zip(names, flat.split(sizes), strict=True)
            }
            hv = hessian_vector_product(model, x, y, vectors, loss_fn=loss_fn, method=method)
            for n in names:
                diagonal[n].addcmul_(vectors[n], hv[n])
    if probes > 1:
        flat_diagonal.div_(probes)
    sums = [
        d.sum() if n not in checked else d.reshape(-1) @ checked[n].reshape(-1).to(d.dtype)
        for n, d in diagonal.items()
    ]
    traces = torch.stack(sums).tolist()  # one read for all layers: one device sync
    return {n: HessianStats(t, diagonal[n], probes) for n, t in zip(names, traces, strict=True)}


def _hvp_func_batched(
    model: nn.Module, x: Tensor, y: Tensor, vectors: Mapping[str, Tensor], loss_fn: LossFn
) -> dict[str, Tensor]:
    """``Hv`` for a batch of tangents (leading dim), by ``vmap`` over ``jvp(grad(...))``."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in vectors}

    def loss(p: dict[str, Tensor]) -> Tensor:
        with HvpMode():
            out = functional_call(model, p, (x,))
        return loss_fn(out, y).mean()

    def hvp(v: dict[str, Tensor]) -> dict[str, Tensor]:
        result: dict[str, Tensor] = jvp(grad(loss), (params,), (v,))[1]
        return result

    with torch.no_grad():
        batched: dict[str, Tensor] = vmap(hvp)(dict(vectors))
    return batched
