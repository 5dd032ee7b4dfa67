"""Sums of per-sample gradients and of their squares, by layer type.

Internal to :mod:`.gradients`: for each layer, ``(1/B) Σ_b g_b`` and ``(1/B) Σ_b g_b²``
(and the latter over the boundary samples) are written into preallocated slots. Linear
layers fed a matrix use the rank-one identity ``Σ_b g_b² = (δ²)ᵀ(a²)``; sequences and
convolutions (unfolded into patches) form each ``g_b`` with one batched product per chunk of
the batch; anything else goes through ``torch.func``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from esper.workloads.sensors.capture import LayerCall

__all__ = ["Slots", "func_sums", "hookable", "hooked_sums", "split_square_sums"]

_CHUNK_ELEMENTS = 1 << 22  # per-sample gradient elements held at once on the general paths


def hookable(module: nn.Module, name: str) -> bool:
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


class Slots:
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


def hooked_sums(
    module: nn.Module,
    calls: Sequence[tuple[LayerCall, Tensor | None]],
    boundary: Tensor | None,
    batch: int,
    out: list[Tensor],
    scales: tuple[float, float],
    mean: Tensor | None = None,
) -> None:
    """Write ``(ḡ, F, ·[, F_boundary])`` of a hooked Linear or Conv weight into ``out``.

    ``mean``, when the caller has it (the training steps' own weight gradients, dense), is
    copied as ``ḡ`` instead of being formed again from the traffic: one product fewer."""
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
            _matrix_sums(*pairs[0], boundary, out, scales, mean)
            return
        a = torch.cat([p[0].reshape(batch, -1, p[0].shape[-1]) for p in pairs], dim=1)
        d = torch.cat([p[1].reshape(batch, -1, p[1].shape[-1]) for p in pairs], dim=1)
        _positional_sums(a, d, boundary, out, scales, mean)
        return
    patches, deltas = [], []
    for a, d in pairs:
        patches.append(_unfold(module, a).transpose(1, 2))
        deltas.append(d.flatten(2).transpose(1, 2))
    _positional_sums(torch.cat(patches, 1), torch.cat(deltas, 1), boundary, out, scales, mean)


def _matrix_sums(
    a: Tensor,
    d: Tensor,
    boundary: Tensor | None,
    out: list[Tensor],
    scales: tuple[float, float],
    mean: Tensor | None = None,
) -> None:
    """Rank-one per-sample gradients: a product for the mean (unless given) and the squares'
    sum over the batch. With boundary samples, the squares' sum is split into the boundary's
    part and the rest's: the same arithmetic as one product over the batch, and the boundary
    Fisher comes free instead of costing another product."""
    if mean is not None:
        out[0].copy_(mean)
    else:
        torch.addmm(out[0], d.t(), a, beta=0.0, alpha=scales[0], out=out[0])
    if boundary is None or torch.unique(boundary).numel() != boundary.numel():
        a2, d2 = a * a, d * d
        torch.addmm(out[1], d2.t(), a2, beta=0.0, alpha=scales[0], out=out[1])
        if boundary is not None:  # repeated boundary samples: counted as often as given
            torch.mm(d2[boundary].t(), a2[boundary], out=out[3])
            out[3].mul_(scales[1])
    else:  # boundary rows first, squared in place: the two sums are slices of one gather
        rest = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
        rest[boundary] = False
        order = torch.cat([boundary, rest.nonzero().view(-1)])
        a2, d2 = a.index_select(0, order), d.index_select(0, order)
        split_square_sums(a2.mul_(a2), d2.mul_(d2), boundary.numel(), out, scales)


def split_square_sums(
    a2: Tensor,
    d2: Tensor,
    boundary: int,
    out: list[Tensor],
    scales: tuple[float, float],
    factor: float = 1.0,
) -> None:
    """``F`` and ``F_boundary`` into ``out[1]`` and ``out[3]`` from squared inputs ``a2`` and
    output gradients ``d2`` whose first ``boundary`` rows are the boundary samples': the two
    sums are slices of one product, ``(d2)ᵀ(a2)``, each scaled by its ``scales`` entry times
    ``factor``."""
    torch.mm(d2[:boundary].t(), a2[:boundary], out=out[3])
    torch.addmm(out[3], d2[boundary:].t(), a2[boundary:], out=out[1])
    out[1].mul_(scales[0] * factor)
    out[3].mul_(scales[1] * factor)


def _positional_sums(
    a: Tensor,
    d: Tensor,
    boundary: Tensor | None,
    out: list[Tensor],
    scales: tuple[float, float],
    given: Tensor | None = None,
) -> None:
    """Per-sample gradients ``g_b = Σ_p δ_bp a_bpᵀ`` (``a``: ``(B, P, K)``, ``d``:
    ``(B, P, O)``), formed in chunks of the batch; the mean copied from ``given`` if given."""
    batch, _, k = a.shape
    o = d.shape[2]
    mean, fisher = out[0].view(o, k), out[1].view(o, k)
    if given is not None:
        mean.copy_(given.view(o, k))
    else:
        da = (d.reshape(-1, o).t(), a.reshape(-1, k))
        torch.addmm(mean, *da, beta=0.0, alpha=scales[0], out=mean)
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


def func_sums(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    names: list[str],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    boundary: Tensor | None,
    slots: Slots,
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
