"""Choosing exactly ``k`` items: Gumbel-top-k, its continuous relaxation, and masked top-k.

Sampling ``k`` items without replacement from ``softmax(s / τ)`` is the same as taking the top
``k`` of the perturbed scores ``s / τ + g`` with ``g`` i.i.d. Gumbel(0, 1) (the Gumbel-top-k
trick; Vieira 2014, Kool, van Hoof & Welling 2019, arXiv 1903.06059). Differentiable Subset
Pruning (Li, Cotterell & Sachan 2021, arXiv 2108.04657) uses it to keep exactly ``K`` attention
heads, with ``s_h = log i_h`` the log-importance of head ``h``; its gradient comes from the
relaxed top-k of Xie & Ermon (2019, arXiv 1901.10517), :func:`relaxed_topk`.

:func:`gumbel_topk` costs one noise draw and one ``torch.topk``: linear in the number of items
(plus ``k log k``), so the surgery policies use it to pick which weights to cut or regrow.
"""

from __future__ import annotations

import math

import torch

from esper.workloads.scalpel.estimators import gumbel_noise

__all__ = ["gumbel_topk", "gumbel_topk_blocks", "relaxed_topk", "topk_among"]


_SMALL = 1 << 17
_SAMPLE = 1 << 16


def _check_k(k: int, n: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, {n}] (the number of eligible items)")


def _topk_indices(x: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Indices of the ``k`` largest (smallest) entries of 1-D ``x``, in no particular order.

    Exact, but faster than one ``torch.topk`` over millions of entries with large ``k``: a
    strided sample bounds the ``k``-th value from the safe side, the entries beyond that bound
    are gathered, and ``torch.topk`` runs on them only. If the bound turns out too tight (fewer
    than ``k`` candidates), it falls back to the full ``torch.topk``.
    """
    n = x.numel()
    if n <= _SMALL or k == 0 or k * 4 > n:
        return torch.topk(x, k, largest=largest, sorted=False).indices
    sample = x[:: n // _SAMPLE]
    m = sample.numel()
    expected = k / n * m
    rank = min(m, math.ceil(1.1 * expected + 4.0 * math.sqrt(expected) + 8))
    bound = torch.topk(sample, rank, largest=largest, sorted=True).values[-1]
    candidates = ((x >= bound) if largest else (x <= bound)).nonzero().view(-1)
    if candidates.numel() < k:
        return torch.topk(x, k, largest=largest, sorted=False).indices
    picked = torch.topk(x[candidates], k, largest=largest, sorted=False).indices
    return candidates[picked]


def gumbel_topk(
    scores: torch.Tensor,
    k: int,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flat indices of exactly ``k`` distinct items sampled from ``softmax(scores / tau)``.

    Items are taken in the sampled order (first = first draw). Entries of ``scores`` equal to
    ``−inf`` are never chosen; ``k`` must not exceed the number of finite scores.

    Args:
        scores: Log-weights of the items, any shape (flattened).
        k: How many to keep.
        tau: Temperature; ``0`` is the deterministic top-k, large ``tau`` a uniform subset.
        generator: Random stream for the Gumbel noise.

    Raises:
        ValueError: ``k`` out of range or ``tau`` negative.
    """
    flat = scores.detach().reshape(-1)
    if not flat.is_floating_point():
        flat = flat.float()
    if tau < 0:
        raise ValueError(f"tau={tau} must be ≥ 0")
    eligible = int(torch.isfinite(flat).count_nonzero())
    _check_k(k, eligible)
    if tau == 0:
        return torch.topk(flat, k, sorted=True).indices
    noise = gumbel_noise(flat.shape, generator, flat.device, flat.dtype)
    perturbed = flat / tau + noise
    chosen = _topk_indices(perturbed, k)
    order = torch.argsort(perturbed[chosen], descending=True, stable=True)
    return chosen[order]


def gumbel_topk_blocks(
    scores: torch.Tensor,
    k: int,
    block: int,
    capacity: torch.Tensor,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`gumbel_topk` with at most ``capacity[b]`` items from each block ``b`` of
    ``block`` consecutive entries (N:M regrowth: a block of ``M`` takes at most ``N`` kept).

    The same as drawing items one by one from the Gumbel-perturbed order and skipping those
    whose block is full: within a block only its ``capacity`` best perturbed items can be
    reached, and among those the best ``k`` overall are taken. ``k`` is clipped to what the
    capacities and finite scores allow.

    Raises:
        ValueError: ``scores`` does not split into blocks, or ``tau`` is negative.
    """
    flat = scores.detach().reshape(-1).float()
    if flat.numel() % block or capacity.numel() != flat.numel() // block:
        raise ValueError(
            f"{flat.numel()} scores do not split into {capacity.numel()} blocks of {block}"
        )
    if tau < 0:
        raise ValueError(f"tau={tau} must be ≥ 0")
    if tau > 0:
        flat = flat / tau + gumbel_noise(flat.shape, generator, flat.device, flat.dtype)
    rows = flat.view(-1, block)
    order = rows.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(block, device=rank.device).expand_as(order))
    reachable = (rank < capacity.view(-1, 1).to(rank)) & torch.isfinite(rows)
    masked = torch.where(reachable, rows, torch.full_like(rows, -float("inf"))).view(-1)
    k = min(k, int(reachable.count_nonzero()))
    return torch.topk(masked, k, sorted=True).indices


def relaxed_topk(
    scores: torch.Tensor,
    k: int,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    noise: bool = True,
) -> torch.Tensor:
    """A differentiable "soft k-hot" vector summing to ``k`` (non-negative entries).

    Xie & Ermon (2019): ``k`` successive softmaxes, each ``softmax(r / τ)`` over the perturbed
    scores ``r = s + g`` after the mass taken by earlier draws is removed with
    ``r ← r + log(1 − p_prev)``; the sum of the ``k`` soft one-hots tends to the exact top-k
    indicator as ``τ → 0`` (at high ``τ`` an entry can slightly exceed 1). Cost ``O(k·n)``,
    meant for heads, neurons and channels.

    Args:
        scores: 1-D log-importances (differentiable).
        k: Subset size.
        tau: Relaxation temperature, ``> 0``.
        generator: Random stream for the Gumbel noise.
        noise: Add Gumbel noise (``False`` for the deterministic relaxation at test time).
    """
    if scores.dim() != 1:
        raise ValueError(f"relaxed_topk takes 1-D scores, got shape {tuple(scores.shape)}")
    _check_k(k, scores.numel())
    if tau <= 0:
        raise ValueError(f"tau={tau} must be > 0 for the relaxation")
    r = scores
    if noise:
        r = r + gumbel_noise(scores.shape, generator, scores.device, scores.dtype)
    khot = torch.zeros_like(scores)
    onehot = torch.zeros_like(scores)
    for _ in range(k):
        r = r + torch.log((1.0 - onehot).clamp_min(1e-20))
        onehot = torch.softmax(r / tau, dim=0)
        khot = khot + onehot
    return khot


def topk_among(
    scores: torch.Tensor, eligible: torch.Tensor, k: int, largest: bool = True
) -> torch.Tensor:
    """Flat indices of the ``k`` largest (or smallest) ``scores`` where ``eligible`` is true.

    The selection step of RigL-style updates (Evci et al. 2020, arXiv 1911.11134): drop the
    smallest ``|w|`` among active weights, grow the largest ``|∇L|`` among inactive ones.

    Args:
        scores: Scores, any shape (flattened).
        eligible: Boolean tensor of the same shape.
        k: How many; at most the number of eligible entries.
        largest: Largest scores if true, smallest otherwise.
    """
    flat = scores.detach().reshape(-1)
    ok = eligible.reshape(-1)
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=flat.device)
    count = int(ok.count_nonzero())
    _check_k(k, count)
    if count * 4 <= flat.numel():  # few eligible: compress first
        where = ok.nonzero().view(-1)
        return where[_topk_indices(flat[where], k, largest)]
    fill = float("-inf") if largest else float("inf")
    masked = torch.where(ok, flat, torch.full((), fill, dtype=flat.dtype, device=flat.device))
    return _topk_indices(masked, k, largest)
