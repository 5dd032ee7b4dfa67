"""Layer-wise allocation of a global density budget: ``uniform`` and ``erk``.

An allocation turns a global density ``d`` and the shapes of the prunable tensors into an exact
number of kept weights per tensor, whose sum is ``round(d · N)`` with ``N`` the total number of
prunable weights, counting the tensors that are kept dense. Real-valued per-layer budgets are
rounded by the largest-remainder method, so the global count is exact and each layer is within
one weight of its real budget.

``erk`` is the Erdős–Rényi-Kernel distribution of RigL (Evci et al. 2020, arXiv 1911.11134,
section 3): the density of layer ``l`` is proportional to ``Σ shape / Π shape``, i.e.
``(n_out + n_in + k_h + k_w) / (n_out · n_in · k_h · k_w)`` for a convolution and
``(n_out + n_in) / (n_out · n_in)`` for a fully connected layer (raised to ``power``), scaled so
that the parameter-weighted density equals ``d``; a layer whose density would exceed 1 is made
dense and the scale is recomputed for the rest, as in ``google-research/rigl``'s
``sparse_utils.get_sparsities``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from esper.registry import Registry

__all__ = ["DISTRIBUTIONS", "allocate", "erk_densities", "uniform_densities"]

Shapes = Mapping[str, Sequence[int]]
DensityFn = Callable[[Shapes, float, frozenset[str]], dict[str, float]]

DISTRIBUTIONS: Registry[DensityFn] = Registry("layer distribution")


def _budget(shapes: Shapes, density: float, dense: frozenset[str]) -> tuple[float, int]:
    """Real number of weights to spread over the non-dense tensors, and their total size."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density={density} must lie in (0, 1]")
    unknown = sorted(dense - set(shapes))
    if unknown:
        raise ValueError(
            f"dense layer {unknown[0]!r} is not prunable; prunable: {', '.join(shapes)}"
        )
    total = sum(math.prod(s) for s in shapes.values())
    fixed = sum(math.prod(shapes[n]) for n in dense)
    free = total - fixed
    budget = density * total - fixed
    if budget < -1e-9:
        raise ValueError(
            f"the dense layers ({', '.join(sorted(dense))}) alone hold {fixed} of {total} weights, "
            f"more than density={density} allows; raise the density or keep fewer layers dense"
        )
    return max(budget, 0.0), free


@DISTRIBUTIONS.register("uniform")
def uniform_densities(shapes: Shapes, density: float, dense: frozenset[str]) -> dict[str, float]:
    """The same density for every tensor not in ``dense`` (which get 1.0)."""
    budget, free = _budget(shapes, density, dense)
    share = budget / free if free else 1.0
    return {n: 1.0 if n in dense else share for n in shapes}


@DISTRIBUTIONS.register("erk")
def erk_densities(
    shapes: Shapes, density: float, dense: frozenset[str], power: float = 1.0
) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020): ``d_l = ε · (Σ shape / Π shape)^power``."""
    budget, _ = _budget(shapes, density, dense)
    raw = {n: (sum(s) / math.prod(s)) ** power for n, s in shapes.items()}
    dense_set = set(dense)
    while True:
        free = [n for n in shapes if n not in dense_set]
        left = budget - sum(math.prod(shapes[n]) for n in dense_set - dense)
        divisor = sum(raw[n] * math.prod(shapes[n]) for n in free)
        eps = left / divisor if divisor else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        top = max(raw[n] for n in over)
        dense_set.update(n for n in over if raw[n] == top)
    return {n: 1.0 if n in dense_set else eps * raw[n] for n in shapes}


def allocate(
    shapes: Shapes,
    density: float,
    distribution: str = "uniform",
    dense: Sequence[str] = (),
) -> dict[str, int]:
    """Exact kept-weight counts per tensor for a global ``density``.

    Args:
        shapes: Shape of every prunable tensor, in order.
        density: Target fraction of all prunable weights kept, in ``(0, 1]``.
        distribution: A name registered in :data:`DISTRIBUTIONS` (``uniform``, ``erk``).
        dense: Tensors kept fully dense (they still count towards the global density).

    Returns:
        Kept counts summing to ``round(density · N)`` (largest-remainder rounding).

    Raises:
        esper.registry.UnknownNameError: unknown distribution.
        ValueError: density out of range, or dense layers over the budget.
    """
    fn = DISTRIBUTIONS[distribution]
    dense_set = frozenset(dense)
    densities = fn(shapes, density, dense_set)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    exact = {n: min(max(densities[n], 0.0), 1.0) * sizes[n] for n in shapes}
    counts = {n: math.floor(exact[n] + 1e-9) for n in shapes}
    target = round(density * sum(sizes.values()))
    short = target - sum(counts.values())
    order = sorted(
        (n for n in shapes if counts[n] < sizes[n]),
        key=lambda n: (exact[n] - counts[n], sizes[n]),
        reverse=True,
    )
    for n in order[: max(short, 0)]:
        counts[n] += 1
    return counts
