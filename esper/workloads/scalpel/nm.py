"""N:M structured sparsity patterns: at most ``N`` non-zeros in every block of ``M`` weights.

Blocks run along each output row of the weight flattened to ``(out, in · kernel)``, the layout
that sparse tensor cores accelerate: 2:4 on NVIDIA Ampere and later (Mishra et al. 2021,
arXiv 2104.08378), through ``torch.sparse.to_sparse_semi_structured`` (CUDA, compute
capability ≥ 8.0, no CPU path). Learning N:M masks from scratch with dense gradients is SR-STE
(Zhou et al. 2021, arXiv 2102.04010).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "export_semi_structured",
    "nm_compatible",
    "nm_mask",
    "nm_valid",
    "nm_violations",
    "semi_structured_available",
]


def _check_nm(n: int, m: int) -> None:
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
        raise ValueError(f"N:M needs integers 0 < N ≤ M, got N={n}, M={m}")


def _blocks(x: torch.Tensor, m: int) -> torch.Tensor:
    rows = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    if rows.shape[1] % m:
        raise ValueError(
            f"a weight of shape {tuple(x.shape)} has rows of {rows.shape[1]} weights, "
            f"not a multiple of M={m}; N:M blocks cannot tile it"
        )
    return rows.reshape(-1, m)


def nm_compatible(shape: torch.Size | tuple[int, ...], m: int) -> bool:
    """Whether a weight of ``shape`` splits into blocks of ``m`` along its rows."""
    row = 1
    for s in shape[1:] if len(shape) > 1 else shape:
        row *= s
    return row % m == 0


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """The N:M pattern keeping the ``n`` highest ``scores`` of every block of ``m``.

    Args:
        scores: Any score shaped like the weight (``|w|``, ``|w·g|``, learned logits).
        n: Survivors per block.
        m: Block length; rows (``in · kernel``) must be a multiple of ``m``.

    Returns:
        A boolean mask shaped like ``scores`` with exactly ``n`` true entries per block.
    """
    _check_nm(n, m)
    blocks = _blocks(scores.detach(), m)
    keep = torch.topk(blocks, n, dim=1, sorted=False).indices
    mask = torch.zeros_like(blocks, dtype=torch.bool)
    mask.scatter_(1, keep, True)
    return mask.reshape(scores.shape)


def nm_violations(mask: torch.Tensor, n: int = 2, m: int = 4) -> int:
    """Number of blocks of ``m`` with more than ``n`` kept entries (0 for a valid pattern)."""
    _check_nm(n, m)
    return int((_blocks(mask, m).to(torch.int32).sum(dim=1) > n).sum())


def nm_valid(mask: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether ``mask`` (or a weight, non-zero = kept) keeps at most ``n`` of every ``m``."""
    flags = mask if mask.dtype == torch.bool else mask != 0
    return nm_compatible(tuple(mask.shape), m) and nm_violations(flags, n, m) == 0


def semi_structured_available(device: torch.device | None = None) -> bool:
    """Whether this machine can run 2:4 semi-structured kernels (CUDA, capability ≥ 8.0)."""
    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def export_semi_structured(linear: nn.Linear) -> nn.Linear:
    """Replace a 2:4-masked Linear's weight by a ``SparseSemiStructuredTensor``, in place.

    The weight must already satisfy 2:4 (e.g. the Scalpel's ``nm`` mechanism after
    ``squash()``), sit on a CUDA device of compute capability ≥ 8.0, and be fp16, bf16 or int8.
    The result is for inference: its weight no longer requires grad.

    Raises:
        RuntimeError: no CUDA device of capability ≥ 8.0, or unsupported dtype.
        ValueError: the weight is not 2:4 sparse.
    """
    weight = linear.weight.detach()
    if not weight.is_cuda or not semi_structured_available(weight.device):
        where = "a CUDA device" if weight.is_cuda else f"device {weight.device}"
        raise RuntimeError(
            f"2:4 semi-structured export needs a CUDA GPU with compute capability ≥ 8.0 "
            f"(Ampere or newer); the weight is on {where} without one. "
            f"Keep the masked dense Linear on this machine."
        )
    if weight.dtype not in (torch.float16, torch.bfloat16, torch.int8):
        raise RuntimeError(
            f"semi-structured kernels take fp16, bf16 or int8 weights, not {weight.dtype}; "
            f"call linear.to(torch.bfloat16) first"
        )
    if not nm_valid(weight, 2, 4):
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} is not 2:4 sparse "
            f"({nm_violations(weight != 0, 2, 4)} blocks keep more than 2 of 4)"
        )
    from torch.sparse import to_sparse_semi_structured

    linear.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
    return linear
