"""Per-sample gradient statistics in one extra backward pass: Fisher, GSNR, coherence.

For every prunable tensor, from the per-sample loss gradients ``g_b`` of a batch of ``B``:

- the **empirical Fisher diagonal** ``F = (1/B) Σ_b g_b²`` and its trace;
- the **gradient signal-to-noise ratio** per weight, ``GSNR = ḡ² / max(Var_b[g], eps)`` with
  ``ḡ = (1/B) Σ_b g_b`` and the population variance ``Var_b[g] = F − ḡ²`` (Liu et al. 2020,
  "Understanding Why Neural Networks Generalize Well Through GSNR of Parameters", ICLR,
  arXiv 2001.07384), and per layer the mean of the per-weight GSNR, as that paper averages it;
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
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from esper.workloads.sensors.capture import LayerCall, LayerCapture, prunable_parameters

__all__ = [
    "GradientReport",
    "GradientStats",
    "LossFn",
    "boundary_samples",
    "check_masks",
    "gradient_statistics",
    "margins",
    "per_sample_cross_entropy",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(outputs, targets)`` → one loss per sample, shape ``(B,)``."""

_CHUNK_ELEMENTS = 1 << 22  # per-sample gradient elements held at once on the general paths


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


def _hookable(module: nn.Module, name: str) -> bool:
    if not name.endswith(".weight") or getattr(module, "weight", None) is None:
        return False
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return (
            module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
    return False


def gradient_statistics(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    params: Sequence[str] | None = None,
    loss_fn: LossFn | None = None,
    masks: Mapping[str, Tensor] | None = None,
    boundary_quantile: float | None = None,
    keep_outputs: bool = False,
    method: Literal["auto", "func"] = "auto",
    eps: float = 1e-12,
) -> GradientReport:
    """Fisher diagonal, GSNR and coherence of every prunable tensor from one batch.

    Costs one forward pass and one backward pass that computes output gradients only, plus
    per layer the extra product for ``Σ_b g_b²`` (and a quarter of one more, by default, for
    the contact-aware Fisher). All per-weight results are views into one buffer, allocated
    once per call.

    Args:
        model: The network; samples must not interact in its forward pass (no BatchNorm).
        x: Inputs, batch first.
        y: Targets.
        params: Parameter names to report on (default: :func:`prunable_parameters`).
        loss_fn: Per-sample loss (default: cross-entropy).
        masks: Boolean masks by parameter name, used for layer summaries only.
        boundary_quantile: If given, also the contact-aware Fisher over the
            ``⌈quantile·B⌉`` lowest-margin samples.
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
        hooked = [n for n in names if method == "auto" and _hookable(capture.modules[n], n)]
        with torch.set_grad_enabled(bool(hooked)):
            logits = model(x)
            losses = loss_fn(logits, y)
    capture.check_unmodified()
    if losses.shape != (batch,):
        raise ValueError(f"loss_fn must return one loss per sample, shape ({batch},)")
    boundary = None
    if boundary_quantile is not None:
        boundary = boundary_samples(logits.detach(), y, losses.detach(), boundary_quantile)
    slots = _Slots({n: named[n] for n in names}, 4 if boundary is not None else 3)
    scales = (1.0 / batch, 1.0 / max(len(boundary), 1) if boundary is not None else 1.0)
    if hooked:
        calls = [(n, call) for n in hooked for call in capture.calls[n]]
        grads = torch.autograd.grad(losses.sum(), [c.output for _, c in calls], allow_unused=True)
        for name in hooked:
            mine = [(c, g) for (n, c), g in zip(calls, grads, strict=True) if n == name]
            _hooked_sums(capture.modules[name], mine, boundary, batch, slots.of(name), scales)
    rest = [n for n in names if n not in hooked]
    if rest:
        _func_sums(model, x, y, rest, loss_fn, boundary, slots, scales)
    layers = _finish(names, slots, batch, checked, eps)
    outputs = {}
    if keep_outputs:
        outputs = {
            n: torch.cat([c.output.detach() for c in capture.calls[n]])
            for n in names
            if capture.calls[n]
        }
    return GradientReport(layers, losses.detach(), logits.detach(), boundary, outputs)


class _Slots:
    """Per layer, views ``(mean, fisher, gsnr[, contact])`` into one fresh buffer.

    One allocation per layer instead of one per statistic: fewer page faults, which cost as
    much as the arithmetic on small machines."""

    def __init__(self, params: Mapping[str, Tensor], rows: int) -> None:
        self._views = {
            name: list(torch.empty(rows, *p.shape, dtype=p.dtype, device=p.device).unbind(0))
            for name, p in params.items()
        }

    def of(self, name: str) -> list[Tensor]:
        return self._views[name]


def _hooked_sums(
    module: nn.Module,
    calls: Sequence[tuple[LayerCall, Tensor | None]],
    boundary: Tensor | None,
    batch: int,
    out: list[Tensor],
    scales: tuple[float, float],
) -> None:
    """Write ``(ḡ, F, ·[, F_boundary])`` of a hooked Linear or Conv weight into ``out``."""
    if not calls:
        for t in out:
            t.zero_()
        return
    for call, _ in calls:
        if call.input.shape[0] != batch:
            raise ValueError(
                f"a layer saw a batch of {call.input.shape[0]}, not {batch}; "
                "use method='func' for models that reshape the batch dimension"
            )
    pairs = [
        (c.input.detach(), g if g is not None else torch.zeros_like(c.output)) for c, g in calls
    ]
    if isinstance(module, nn.Linear):
        if len(pairs) == 1 and pairs[0][0].dim() == 2:
            _matrix_sums(*pairs[0], boundary, out, scales)
            return
        a = torch.cat([p[0].reshape(batch, -1, p[0].shape[-1]) for p in pairs], dim=1)
        d = torch.cat([p[1].reshape(batch, -1, p[1].shape[-1]) for p in pairs], dim=1)
        _positional_sums(a, d, boundary, out, scales)
        return
    patches, deltas = [], []
    for a, d in pairs:
        patches.append(_unfold(module, a).transpose(1, 2))
        deltas.append(d.flatten(2).transpose(1, 2))
    _positional_sums(torch.cat(patches, 1), torch.cat(deltas, 1), boundary, out, scales)


def _matrix_sums(
    a: Tensor, d: Tensor, boundary: Tensor | None, out: list[Tensor], scales: tuple[float, float]
) -> None:
    """Rank-one per-sample gradients: two (three) products, scaled inside the BLAS call."""
    a2, d2 = a * a, d * d
    torch.addmm(out[0], d.t(), a, beta=0.0, alpha=scales[0], out=out[0])
    torch.addmm(out[1], d2.t(), a2, beta=0.0, alpha=scales[0], out=out[1])
    if boundary is not None:
        torch.addmm(out[3], d2[boundary].t(), a2[boundary], beta=0.0, alpha=scales[1], out=out[3])


def _positional_sums(
    a: Tensor, d: Tensor, boundary: Tensor | None, out: list[Tensor], scales: tuple[float, float]
) -> None:
    """Per-sample gradients ``g_b = Σ_p δ_bp a_bpᵀ`` (``a``: ``(B, P, K)``, ``d``:
    ``(B, P, O)``), formed in chunks of the batch."""
    batch, _, k = a.shape
    o = d.shape[2]
    mean, fisher = out[0].view(o, k), out[1].view(o, k)
    torch.addmm(mean, d.reshape(-1, o).t(), a.reshape(-1, k), beta=0.0, alpha=scales[0], out=mean)
    fisher.zero_()
    contact = out[3].view(o, k) if boundary is not None else None
    chosen = torch.zeros(batch, dtype=torch.bool, device=a.device)
    if contact is not None:
        contact.zero_()
        chosen[boundary] = True
    step = max(1, _CHUNK_ELEMENTS // max(o * k, 1))
    for start in range(0, batch, step):
        g = torch.bmm(d[start : start + step].transpose(1, 2), a[start : start + step])
        g.mul_(g)
        fisher += g.sum(0)
        if contact is not None:
            contact += g[chosen[start : start + step]].sum(0)
    fisher.mul_(scales[0])
    if contact is not None:
        contact.mul_(scales[1])


def _unfold(module: nn.Module, a: Tensor) -> Tensor:
    """Patches of a convolution's input, ``(B, C·k, P)`` in the weight's element order."""
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    if isinstance(module, nn.Conv1d):
        return F.unfold(
            a.unsqueeze(2),
            kernel_size=(1, module.kernel_size[0]),
            dilation=(1, module.dilation[0]),
            padding=(0, int(module.padding[0])),
            stride=(1, module.stride[0]),
        )
    return F.unfold(
        a,
        kernel_size=module.kernel_size,
        dilation=module.dilation,
        padding=tuple(int(p) for p in module.padding),
        stride=module.stride,
    )


def _func_sums(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    names: list[str],
    loss_fn: LossFn,
    boundary: Tensor | None,
    slots: _Slots,
    scales: tuple[float, float],
) -> None:
    """The general path: per-sample gradients by ``vmap(grad(...))``, in batch chunks."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}

    def sample_loss(p: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(model, p, (xb.unsqueeze(0),))
        return loss_fn(out, yb.unsqueeze(0)).sum()

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    numel = sum(p.numel() for p in params.values())
    step = max(1, _CHUNK_ELEMENTS // max(numel, 1))
    chosen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if boundary is not None:
        chosen[boundary] = True
    for n in names:
        for t in slots.of(n):
            t.zero_()
    for start in range(0, x.shape[0], step):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*batching rule", category=UserWarning)
            grads = per_sample(params, x[start : start + step], y[start : start + step])
        for n, g in grads.items():
            out = slots.of(n)
            out[0] += g.sum(0)
            g2 = g * g
            out[1] += g2.sum(0)
            if boundary is not None:
                out[3] += g2[chosen[start : start + step]].sum(0)
    for n in names:
        out = slots.of(n)
        out[0].mul_(scales[0])
        out[1].mul_(scales[0])
        if boundary is not None:
            out[3].mul_(scales[1])


def _finish(
    names: list[str], slots: _Slots, batch: int, masks: Mapping[str, Tensor], eps: float
) -> dict[str, GradientStats]:
    """Per-weight GSNR (in place, into its slot: no temporaries) and the layer summaries."""
    out = {}
    for name in names:
        views = slots.of(name)
        mean, fisher, gsnr = views[0], views[1], views[2]
        contact = views[3] if len(views) > 3 else None
        torch.addcmul(fisher, mean, mean, value=-1.0, out=gsnr).clamp_min_(eps)  # variance
        torch.div(mean, gsnr, out=gsnr).mul_(mean)
        flat_mean = mean.reshape(-1)
        mask = masks.get(name)
        if mask is None:
            active = mean.numel()
            mean_sq_sum = float(flat_mean @ flat_mean)
            fisher_trace, gsnr_sum = float(fisher.sum()), float(gsnr.sum())
            contact_trace = None if contact is None else float(contact.sum())
        else:
            weight = mask.reshape(-1).to(fisher.dtype)
            active = int(mask.sum())
            mean_sq_sum = float((flat_mean * weight) @ flat_mean)
            fisher_trace = float(fisher.reshape(-1) @ weight)
            gsnr_sum = float(gsnr.reshape(-1) @ weight)
            contact_trace = None if contact is None else float(contact.reshape(-1) @ weight)
        out[name] = GradientStats(
            mean=mean,
            fisher=fisher,
            gsnr=gsnr,
            fisher_trace=fisher_trace,
            gsnr_mean=gsnr_sum / max(active, 1),
            coherence=mean_sq_sum / fisher_trace if fisher_trace > 0 else 0.0,
            active=active,
            samples=batch,
            contact_fisher=contact,
            contact_fisher_trace=contact_trace,
        )
    return out
