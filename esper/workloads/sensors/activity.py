"""Unit activity: ReDo dormant-unit scores and the effective rank of a layer's activations.

**Dormant units** (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement
Learning", ICML, arXiv 2302.12902): unit ``i`` of a layer scores
``s_i = E_x|h_i(x)| / ((1/H) Σ_k E_x|h_k(x)|)``, its mean absolute activation over the batch
divided by the layer's mean, and is τ-dormant if ``s_i ≤ τ`` (τ = 0.1 by default, as in the
paper's recycling experiments).

**Effective rank**: the entropy effective rank of Roy & Vetterli 2007 ("The effective rank: a
measure of effective dimensionality", EUSIPCO), ``erank(A) = exp(−Σ_k p_k log p_k)`` with
``p_k = σ_k / Σ_j σ_j`` over the singular values of the ``(samples, units)`` activation
matrix. It is what the observations use. :func:`stable_rank` gives the alternative of Kumar
et al. 2021 ("Implicit Under-Parameterization", ICLR, arXiv 2010.14498):
``srank_δ = min{k : Σ_{i≤k} σ_i ≥ (1 − δ) Σ_i σ_i}``, δ = 0.01.

Activations are ``(B, units)`` for Linear layers, ``(B, T, units)`` for Linear layers on
sequences (tokens count as samples) and ``(B, units, *spatial)`` for convolutions (positions
count as samples), taken after the layer's activation function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "ActivityStats",
    "activity_statistics",
    "dormant_scores",
    "effective_rank",
    "singular_values",
    "stable_rank",
    "unit_matrix",
]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda t: t,
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
}
"""Activation functions a layer's output may pass through, by the names the tracer records."""


def unit_matrix(activations: Tensor, channels_first: bool) -> Tensor:
    """Activations as a ``(samples, units)`` matrix.

    Args:
        activations: A layer's activations, batch first.
        channels_first: True for convolutions (units on dim 1), False for Linear layers
            (units on the last dim).
    """
    if activations.dim() < 2:
        raise ValueError(
            f"activations need a batch and a unit dimension, got {activations.dim()}-D"
        )
    if channels_first:
        activations = activations.movedim(1, -1)
    return activations.reshape(-1, activations.shape[-1])


def dormant_scores(matrix: Tensor) -> Tensor:
    """ReDo score of each unit of a ``(samples, units)`` matrix (0 for a silent layer)."""
    per_unit = matrix.abs().mean(dim=0)
    layer_mean = per_unit.mean()  # no host read to test it: a GPU reading does not wait here
    return torch.where(layer_mean > 0, per_unit / layer_mean, torch.zeros_like(per_unit))


def singular_values(matrix: Tensor) -> Tensor:
    """Singular values of a matrix, descending, on the CPU, via the eigenvalues of its smaller
    Gram matrix in double precision (cheap for the tall activation matrices of convolutions).
    The Gram matrix is formed on the matrix's device; its small eigenproblem is solved on the
    CPU: GPU eigensolvers are slower than LAPACK for matrices this small (pytorch/pytorch
    issues 69528 and 121603) and the result is read on the host anyway."""
    m = matrix.detach().to(torch.float64)
    gram = m.t() @ m if m.shape[0] >= m.shape[1] else m @ m.t()
    return torch.linalg.eigvalsh(gram.cpu()).clamp_min(0.0).sqrt().flip(0)


def effective_rank(matrix: Tensor) -> float:
    """Roy & Vetterli's entropy effective rank of a matrix (0 for the zero matrix)."""
    sigma = singular_values(matrix)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(matrix: Tensor, delta: float = 0.01) -> int:
    """Kumar et al.'s ``srank_δ``: singular values needed for ``1 − δ`` of their sum."""
    sigma = singular_values(matrix)
    total = sigma.sum()
    if total <= 0:
        return 0
    cumulative = sigma.cumsum(0) / total
    return int((cumulative < 1.0 - delta).sum()) + 1


@dataclass(frozen=True)
class ActivityStats:
    """Unit activity of one layer.

    Attributes:
        scores: ReDo score per unit.
        dormant: Per unit, whether its score is at most τ.
        dormant_fraction: Fraction of dormant units.
        effective_rank: Entropy effective rank of the activations.
        rank_ratio: ``effective_rank / min(samples, units)``, in ``[0, 1]``.
    """

    scores: Tensor
    dormant: Tensor
    dormant_fraction: float
    effective_rank: float
    rank_ratio: float


def activity_statistics(
    activations: Tensor, channels_first: bool, threshold: float = 0.1
) -> ActivityStats:
    """ReDo scores and effective rank of one layer's (post-activation) activations.

    Args:
        activations: Batch-first activations.
        channels_first: Whether units are on dim 1 (convolutions).
        threshold: τ, the dormancy threshold.
    """
    matrix = unit_matrix(activations.detach(), channels_first)
    scores = dormant_scores(matrix)
    dormant = scores <= threshold
    erank = effective_rank(matrix)
    return ActivityStats(
        scores=scores,
        dormant=dormant,
        dormant_fraction=float(dormant.float().mean()),
        effective_rank=erank,
        rank_ratio=erank / max(min(matrix.shape), 1),
    )
