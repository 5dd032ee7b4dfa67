"""Per-sample gradient statistics in one extra backward pass: Fisher, GSNR, coherence.

For every prunable tensor, from the per-sample loss gradients ``g_b`` of a batch of ``B``:

- the **empirical Fisher diagonal** ``F = (1/B) Σ_b g_b²`` and its trace;
- the **gradient signal-to-noise ratio** per weight, ``GSNR = ḡ² / max(Var_b[g], eps)`` with
  ``ḡ = (1/B) Σ_b g_b`` and the population variance ``Var_b[g] = F − ḡ²`` (Liu et al. 2020,
  "Understanding Why Neural Networks Generalize Well Through GSNR of Parameters", ICLR,
  arXiv 2001.07384), and per layer the mean of the per-weight GSNR, as that paper averages it.
  This is the batch's plug-in estimate, and it is biased upwards at small ``B``: with no
  signal at all (``E[g] = 0``) the sample mean still has ``E[ḡ²] = σ²/B``, so the estimate
  sits near ``1/(B − 1)`` (``1/(B − 3)`` in expectation for Gaussian gradients, where the
  ratio follows a scaled F distribution) instead of 0. ``log_gsnr`` features therefore depend
  on the sensing batch size: compare readings taken with the same ``B`` only (the organism's
  is fixed: ``sense_batches × batch_size``), or read ``GSNR − 1/B`` as the excess over noise;
- the **gradient coherence** ``α = ‖Σ_b g_b‖² / (B · Σ_b ‖g_b‖²) = ‖ḡ‖² / Σ F`` (Chatterjee
  2020, "Coherent Gradients", ICLR, arXiv 2002.10657; Chatterjee & Zielinski 2020 call
  ``B·α`` the m-coherence): 1 when all samples pull the same way, about ``1/B`` when their
  gradients are orthogonal. No pairwise loop: both norms come from the two sums above;
- optionally the **contact-aware Fisher**: ``F`` restricted to the batch's boundary samples
  (see :func:`boundary_samples`), the weights that matter for rare or hard samples.

Per-sample gradients are never materialised for a Linear layer fed a matrix: with inputs
``a_b`` and per-sample output gradients ``δ_b``, ``g_b = δ_b a_bᵀ``, so ``Σ_b g_b = δᵀa`` and
``Σ_b g_b² = (δ²)ᵀ(a²)``, one extra matrix product (Dangel et al. 2020, "BackPACK", ICLR,
arXiv 1912.10985, §2). The losses are *summed*, so ``δ_b`` is the gradient of sample ``b``'s
own loss, not of a mean loss (which would scale it by ``1/B``). When a layer sees a sequence
(a transformer's tokens) or is a convolution (unfolded into patches), ``g_b`` is a sum over
positions and is no longer rank one: it is formed per sample with one batched product, in
chunks. Any other tensor goes through ``torch.func`` (``vmap`` of ``grad`` over
``functional_call``). Only the layer outputs' gradients are requested from autograd, so no
weight gradient is computed twice and ``.grad`` is never touched.

Masks: statistics are reported for every weight, pruned or not (the dense gradient of a
pruned weight is what regrowth reads). The Scalpel keeps pruned weights at exactly zero in
the forward pass, so a plain forward is the masked forward. Layer summaries (trace, mean
GSNR, coherence) are taken over the active weights when a mask is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.workloads.sensors._per_sample import Slots, func_sums, hookable, hooked_sums
from esper.workloads.sensors.capture import LayerCapture, prunable_parameters

__all__ = [
    "BoundaryFn",
    "GradientReport",
    "GradientStats",
    "LossFn",
    "boundary_samples",
    "check_masks",
    "finish_statistics",
    "gradient_statistics",
    "margins",
    "per_sample_cross_entropy",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(outputs, targets)`` → one loss per sample, shape ``(B,)``."""
BoundaryFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]
"""``boundary_fn(outputs, targets, losses, quantile)`` → sorted indices of the samples the
contact-aware Fisher is taken over (:func:`boundary_samples`, or an agent's decision-critical
states, :func:`esper.workloads.rl.contact.decision_critical`)."""


def per_sample_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each sample, shape ``(B,)``: the default loss of the sensors."""
    return F.cross_entropy(logits, targets, reduction="none")


def margins(logits: Tensor, targets: Tensor) -> Tensor:
    """Correct-class logit minus the best other logit, per sample (negative if misclassified)."""
    correct = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf")).amax(dim=1)
    return correct - others


def boundary_samples(logits: Tensor, targets: Tensor, losses: Tensor, quantile: float) -> Tensor:
    """Sorted indices of the ``⌈quantile·B⌉`` samples nearest the decision boundary.

    For classification (integer targets, two or more logits) these are the lowest-margin
    samples (:func:`margins`); otherwise, the highest-loss ones.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"boundary quantile must be in (0, 1], got {quantile}")
    k = max(1, math.ceil(quantile * losses.shape[0]))
    classify = logits.dim() == 2 and logits.shape[1] >= 2 and not targets.is_floating_point()
    score = margins(logits, targets) if classify else -losses
    return torch.topk(score, k, largest=False).indices.sort().values


@dataclass(frozen=True)
class GradientStats:
    """Per-sample gradient statistics of one prunable tensor.

    Attributes:
        mean: Mean per-sample gradient ``ḡ`` (the gradient of the mean loss), dense.
        fisher: Empirical Fisher diagonal ``(1/B) Σ_b g_b²``, dense.
        gsnr: Per-weight GSNR ``ḡ² / max(Var_b[g], eps)``, dense.
        fisher_trace: Sum of ``fisher`` over the active weights.
        gsnr_mean: Mean of ``gsnr`` over the active weights.
        coherence: ``‖ḡ‖² / Σ fisher`` over the active weights, in ``[0, 1]``.
        active: Number of active weights (all of them without a mask).
        samples: Batch size ``B``.
        contact_fisher: Fisher diagonal over the boundary samples only, or None.
        contact_fisher_trace: Its sum over the active weights, or None.
    """

    mean: Tensor
    fisher: Tensor
    gsnr: Tensor
    fisher_trace: float
    gsnr_mean: float
    coherence: float
    active: int
    samples: int
    contact_fisher: Tensor | None = None
    contact_fisher_trace: float | None = None


@dataclass(frozen=True)
class GradientReport:
    """What one sensing pass measured.

    Attributes:
        layers: Statistics per prunable tensor, by full parameter name, in forward order.
        losses: Per-sample losses of the batch, detached.
        logits: Model outputs, detached.
        boundary: Indices of the boundary samples, or None.
        outputs: With ``keep_outputs``, each layer's (pre-activation) output, detached; calls
            of a module used more than once are concatenated along the batch dimension.
    """

    layers: dict[str, GradientStats]
    losses: Tensor
    logits: Tensor
    boundary: Tensor | None
    outputs: dict[str, Tensor]

    @property
    def fisher_trace(self) -> float:
        """Empirical Fisher trace of all prunable tensors (active weights)."""
        return sum(s.fisher_trace for s in self.layers.values())

    @property
    def gsnr_mean(self) -> float:
        """Mean per-weight GSNR over all active prunable weights."""
        active = sum(s.active for s in self.layers.values())
        return sum(s.gsnr_mean * s.active for s in self.layers.values()) / max(active, 1)

    @property
    def coherence(self) -> float:
        """Gradient coherence of all prunable tensors together."""
        num = sum(s.coherence * s.fisher_trace for s in self.layers.values())
        return num / self.fisher_trace if self.fisher_trace > 0 else 0.0


def check_masks(
    params: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    """Validate ``masks`` against ``params``: known names, same shapes, boolean."""
    out: dict[str, Tensor] = {}
    for name, mask in (masks or {}).items():
        if name not in params:
            raise KeyError(f"mask for unknown tensor {name!r}; prunable: {', '.join(params)}")
        if mask.shape != params[name].shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask {name!r} must be a bool tensor of shape {tuple(params[name].shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        out[name] = mask
    return out


def gradient_statistics(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    params: Sequence[str] | None = None,
    loss_fn: LossFn | None = None,
    masks: Mapping[str, Tensor] | None = None,
    boundary_quantile: float | None = None,
    boundary_fn: BoundaryFn | None = None,
    keep_outputs: bool = False,
    method: Literal["auto", "func"] = "auto",
    eps: float = 1e-12,
) -> GradientReport:
    """Fisher diagonal, GSNR and coherence of every prunable tensor from one batch.

    Costs one forward pass and one backward pass that computes output gradients only, plus
    per layer the extra product for ``Σ_b g_b²`` (and a quarter of one more, by default, for
    the contact-aware Fisher). Each layer's per-weight results are views into one buffer.

    Args:
        model: The network; samples must not interact in its forward pass (no BatchNorm).
        x: Inputs, batch first.
        y: Targets.
        params: Parameter names to report on (default: :func:`prunable_parameters`).
        loss_fn: Per-sample loss (default: cross-entropy).
        masks: Boolean masks by parameter name, used for layer summaries only.
        boundary_quantile: If given, also the contact-aware Fisher over the
            ``⌈quantile·B⌉`` lowest-margin samples.
        boundary_fn: Which samples those are (default :func:`boundary_samples`).
        keep_outputs: Keep each layer's output (for ReDo scores and effective ranks).
        method: ``"auto"``: hooks for Linear/Conv weights, ``torch.func`` for the rest;
            ``"func"``: ``torch.func`` for everything (slower; a cross-check).
        eps: Floor of the variance in the GSNR denominator.
    """
    names = list(params) if params is not None else list(prunable_parameters(model))
    named = dict(model.named_parameters())
    checked = check_masks({n: named[n] for n in names if n in named}, masks)
    loss_fn = loss_fn or per_sample_cross_entropy
    batch = x.shape[0]
    with LayerCapture(model, names, named) as capture:
        hooked = [n for n in names if method == "auto" and hookable(capture.modules[n], n)]
        with torch.set_grad_enabled(bool(hooked)):
            logits = model(x)
            losses = loss_fn(logits, y)
    capture.check_unmodified()
    if losses.shape != (batch,):
        raise ValueError(f"loss_fn must return one loss per sample, shape ({batch},)")
    boundary = None
    if boundary_quantile is not None:
        choose = boundary_fn or boundary_samples
        boundary = choose(logits.detach(), y, losses.detach(), boundary_quantile)
    slots = Slots({n: named[n] for n in names}, 4 if boundary is not None else 3)
    scales = (1.0 / batch, 1.0 / max(len(boundary), 1) if boundary is not None else 1.0)
    calls = [(n, call) for n in hooked for call in capture.calls[n]]
    seen = [c.output for _, c in calls]
    grads = torch.autograd.grad(losses.sum(), seen, allow_unused=True) if calls else ()
    for name in hooked:  # a module never called gets zeros
        mine = [(c, g) for (n, c), g in zip(calls, grads, strict=True) if n == name]
        hooked_sums(capture.modules[name], mine, boundary, batch, slots.of(name), scales)
    rest = [n for n in names if n not in hooked]
    if rest:
        func_sums(model, x, y, rest, loss_fn, boundary, slots, scales)
    layers = finish_statistics(names, slots, batch, checked, eps)
    outputs = {}
    if keep_outputs:
        outputs = {
            n: torch.cat([c.output.detach() for c in capture.calls[n]])
            for n in names
            if capture.calls[n]
        }
    return GradientReport(layers, losses.detach(), logits.detach(), boundary, outputs)


def finish_statistics(
    names: list[str], slots: Slots, batch: int, masks: Mapping[str, Tensor], eps: float
) -> dict[str, GradientStats]:
    """Per-weight GSNR (in place, into its slot: no temporaries) and the layer summaries,
    from the summed ``(ḡ, F[, F_boundary])`` in ``slots``. Every layer's sums are read to the
    host together: one device sync, not five per layer."""
    sums: list[Tensor] = []
    for name in names:
        views = slots.of(name)
        mean, fisher, gsnr = views[0], views[1], views[2]
        contact = views[3] if len(views) > 3 else None
        torch.addcmul(fisher, mean, mean, value=-1.0, out=gsnr).clamp_min_(eps)  # variance
        torch.div(mean, gsnr, out=gsnr).mul_(mean)
        flat_mean = mean.reshape(-1)
        mask = masks.get(name)
        if mask is None:
            row = [flat_mean @ flat_mean, fisher.sum(), gsnr.sum(),
                   contact.sum() if contact is not None else fisher.new_zeros(()),
                   torch.tensor(mean.numel())]  # fmt: skip
        else:
            weight = mask.reshape(-1).to(fisher.dtype)
            row = [(flat_mean * weight) @ flat_mean, fisher.reshape(-1) @ weight,
                   gsnr.reshape(-1) @ weight,
                   contact.reshape(-1) @ weight if contact is not None else fisher.new_zeros(()),
                   mask.sum()]  # fmt: skip
        sums.extend(t.to(device=mean.device, dtype=torch.float64) for t in row)
    read = torch.stack(sums).view(-1, 5).tolist() if sums else []
    out = {}
    for name, (mean_sq_sum, fisher_trace, gsnr_sum, contact_sum, active) in zip(
        names, read, strict=True
    ):
        views = slots.of(name)
        contact_fisher = views[3] if len(views) > 3 else None
        out[name] = GradientStats(
            mean=views[0],
            fisher=views[1],
            gsnr=views[2],
            fisher_trace=fisher_trace,
            gsnr_mean=gsnr_sum / max(int(active), 1),
            coherence=mean_sq_sum / fisher_trace if fisher_trace > 0 else 0.0,
            active=int(active),
            samples=batch,
            contact_fisher=contact_fisher,
            contact_fisher_trace=None if contact_fisher is None else contact_sum,
        )
    return out
