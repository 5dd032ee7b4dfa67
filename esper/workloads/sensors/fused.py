"""Gradient statistics from the training step's own backward: no second sensing pass.

:func:`gradient_statistics <esper.workloads.sensors.gradients.gradient_statistics>` runs a
forward and a backward of its own. On the step before a surgery the organism already runs
both to train, so :func:`fused_training_step` takes one training step and reads the Fisher
diagonal, GSNR and coherence of every Linear weight fed a matrix from that same backward, as
BackPACK extends a backward (Dangel et al. 2020, ICLR, arXiv 1912.10985): forward hooks keep
each layer's input ``a``, tensor hooks on its output keep the output gradient ``δ`` that
autograd computes anyway, and one extra product per layer gives ``Σ_b g_b² = B²·(δ²)ᵀ(a²)``
(``δ`` is the gradient of the *mean* loss, ``δ_b = ∂ℓ_b/∂z_b / B``). The mean gradient is the
weight's own ``.grad``, read before the optimizer step. The definitions (population variance,
the GSNR's variance floor, coherence over active weights) are those of
:mod:`esper.workloads.sensors.gradients`, and the results agree with it to float tolerance.

Under a Scalpel whose gradient hook masks ``.grad`` (``masked``), the mean at pruned weights
is the masked gradient, 0, so their GSNR is 0; their Fisher stays dense. Layers that are not
Linear-on-a-matrix (convolutions, sequences) are not covered: use the full sensing pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from esper.workloads.sensors.capture import layer_modules
from esper.workloads.sensors.gradients import GradientStats, check_masks

__all__ = ["fused_training_step"]


def fused_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    names: Sequence[str],
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    masks: Mapping[str, Tensor] | None = None,
    eps: float = 1e-12,
) -> tuple[Tensor, dict[str, GradientStats]]:
    """One training step on ``(x, y)`` that also measures gradient statistics of ``names``.

    Args:
        model: The network (samples must not interact: no BatchNorm).
        optimizer: Its optimizer; stepped once.
        x: Inputs, batch first.
        y: Targets.
        names: Weights of ``nn.Linear`` layers fed ``[batch, features]`` inputs.
        loss_fn: Mean loss (default: cross-entropy).
        masks: Boolean masks by name, for the layer summaries (as the full pass).
        eps: Floor of the variance in the GSNR denominator.

    Returns:
        The (mean) loss before the step, detached, and the statistics per name.

    Raises:
        TypeError: a name is not the weight of a Linear layer.
        ValueError: a layer's input is not a matrix.
    """
    named = dict(model.named_parameters())
    modules = layer_modules(model, names, named)
    for name, module in modules.items():
        if not isinstance(module, nn.Linear) or named[name] is not module.weight:
            raise TypeError(f"{name}: fused statistics cover Linear weights only")
    checked = check_masks({n: named[n] for n in names}, masks)
    inputs: dict[str, Tensor] = {}
    deltas: dict[str, Tensor] = {}
    handles: list[Any] = []

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            if args[0].dim() != 2:
                raise ValueError(f"{name}: fused statistics need a [batch, features] input")
            inputs[name] = args[0].detach()
            output.register_hook(lambda g: deltas.__setitem__(name, g))

        return hook

    for name, module in modules.items():
        handles.append(module.register_forward_hook(keep(name)))
    try:
        out = model(x)
        loss = (loss_fn or nn.functional.cross_entropy)(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    batch = x.shape[0]
    stats = {}
    with torch.no_grad():
        for name in names:
            mean = named[name].grad  # zero_grad(set_to_none) later drops it, never edits it
            assert mean is not None
            a, d = inputs[name], deltas[name]
            d2 = d * d
            fisher = torch.addmm(mean, d2.t(), a * a, beta=0.0, alpha=float(batch))  # F
            stats[name] = _summary(mean, fisher, batch, checked.get(name), eps)
    optimizer.step()
    return loss.detach(), stats


def _summary(
    mean: Tensor, fisher: Tensor, batch: int, mask: Tensor | None, eps: float
) -> GradientStats:
    mean2 = mean * mean
    gsnr = torch.sub(fisher, mean2).clamp_min_(eps)  # the population variance, floored
    torch.div(mean2, gsnr, out=gsnr)
    active = mean.numel() if mask is None else int(mask.sum())
    if mask is None:
        sums = torch.stack([mean2.sum(), fisher.sum(), gsnr.sum()]).tolist()
    else:
        weight = mask.reshape(-1).to(fisher.dtype)
        flat = torch.stack([mean2.reshape(-1), fisher.reshape(-1), gsnr.reshape(-1)])
        sums = flat.mv(weight).tolist()
    mean_sq, trace, gsnr_sum = sums
    return GradientStats(
        mean=mean,
        fisher=fisher,
        gsnr=gsnr,
        fisher_trace=trace,
        gsnr_mean=gsnr_sum / max(active, 1),
        coherence=mean_sq / trace if trace > 0 else 0.0,
        active=active,
        samples=batch,
    )
