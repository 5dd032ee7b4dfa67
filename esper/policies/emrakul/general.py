"""The Surgeon General: layer-wise kept-weight budgets that always meet the global budget.

Every ``M`` surgeries the General reads the global state and chooses one logit per layer slot;
the kept weights of layer ``l`` are ``K · n_l e^{z_l} / Σ_j n_j e^{z_j}`` with ``K = d · N`` the
global budget (so all-zero logits give the uniform density ``d``), clipped to
``[d_min · n_l, n_l]`` with the excess redistributed over the unclipped layers until none
overflows, then rounded by largest remainder. The parameter-weighted density therefore equals
the budget *by construction*, as AMC (He et al. 2018) enforces its FLOPs budget by clipping the
agent's action rather than by penalising it in the reward. One more output modulates the
amplitude of harmonic annealing (:mod:`esper.policies.anesthesia`). With ``data_action`` the
General also decides the organism's data side (:class:`~esper.workloads.memory.DataAction`):
one output for the share of the replay buffer up for refresh and one per selection rule of
:data:`~esper.workloads.memory.SELECTIONS` (the largest chooses the rule), the co-evolution of
the retained data with the topology that it allocates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from esper.policies.emrakul.distribution import GaussianBernoulli
from esper.workloads.memory import SELECTIONS, DataAction

__all__ = ["SurgeonGeneral", "allocate_counts"]


def allocate_counts(
    logits: Sequence[float] | torch.Tensor,
    sizes: Sequence[int],
    density: float,
    min_density: float = 0.0,
) -> list[int]:
    """Kept weights per layer whose sum is exactly ``round(density · Σ sizes)``.

    Exact whenever the floors fit, i.e. ``round(density · N) ≥ Σ_l ⌈min_density · n_l⌉``; each
    count lies in ``[⌈min_density · n_l⌉, n_l]``.

    Args:
        logits: One preference per layer (higher = denser relative to its size).
        sizes: Weights per layer.
        density: Global budget, in ``[min_density, 1]``.
        min_density: Floor of every layer's density.

    Raises:
        ValueError: mismatched lengths, empty layers, or a budget outside
            ``[min_density, 1]``.
    """
    z = [float(v) for v in (logits.tolist() if isinstance(logits, torch.Tensor) else logits)]
    if len(z) != len(sizes) or not sizes:
        raise ValueError(f"{len(z)} logits for {len(sizes)} layers")
    if any(n < 1 for n in sizes):
        raise ValueError(f"every layer needs ≥ 1 weight, got sizes {list(sizes)}")
    if not 0.0 <= min_density <= density <= 1.0:
        raise ValueError(
            f"density={density} must lie in [min_density={min_density}, 1]: the budget cannot "
            "be met otherwise"
        )
    if not all(math.isfinite(v) for v in z):
        raise ValueError(f"logits must be finite, got {z}")
    total = sum(sizes)
    budget = round(density * total)
    low = [min_density * n for n in sizes]
    high = [float(n) for n in sizes]
    budget_real = min(max(float(budget), sum(low)), float(total))
    top = max(z)
    weight = [n * math.exp(v - top) for n, v in zip(sizes, z, strict=True)]
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(len(sizes)) if i not in fixed]
        left = budget_real - sum(fixed.values())
        mass = sum(weight[i] for i in free)
        share = {i: left * weight[i] / mass if mass > 0 else 0.0 for i in free}
        over = [i for i in free if share[i] > high[i] + 1e-9]
        under = [i for i in free if share[i] < low[i] - 1e-9]
        if not over and not under:
            break
        # Clip overflowing layers at dense first, then layers under the floor, and spread what
        # is left over the free layers again (AMC clips its action the same way).
        for i in over:
            fixed[i] = high[i]
        if not over:
            for i in under:
                fixed[i] = low[i]
        if len(fixed) == len(sizes):
            share = {}
            break
    exact = [fixed[i] if i in fixed else share[i] for i in range(len(sizes))]
    counts = [
        min(sizes[i], max(math.ceil(low[i] - 1e-9), math.floor(exact[i] + 1e-9)))
        for i in range(len(sizes))
    ]
    short = budget - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: exact[i] - counts[i], reverse=True)
    step = 1 if short > 0 else -1
    while short:
        moved = False
        for i in order if short > 0 else reversed(order):
            if not short:
                break
            ok = counts[i] < sizes[i] if step > 0 else counts[i] - 1 >= math.ceil(low[i] - 1e-9)
            if ok:
                counts[i] += step
                short -= step
                moved = True
        if not moved:
            break
    return counts


class SurgeonGeneral(nn.Module):
    """The slow-timescale actor: global state → per-slot density logits and annealing gain.

    Args:
        state_dim: Width of the global state.
        max_layers: Layer slots (the global state's slot count).
        hidden: Width of the hidden layers.
        init_log_std: Initial log standard deviation of the Gaussian policy.
        data_action: Also output the data side's action (refresh share and selection rule).
        strategy: The rule an untrained General keeps choosing (the organism's own; default
            ``reservoir``).
        elastic: Also output the global density it asks for (an elastic budget,
            :mod:`esper.policies.elastic`), last in the action.
    """

    STRATEGIES = tuple(SELECTIONS.names())
    """Selection rules the data action chooses among, in output order."""

    def __init__(
        self,
        state_dim: int,
        max_layers: int,
        hidden: int = 64,
        init_log_std: float = -1.0,
        data_action: bool = False,
        strategy: str | None = None,
        elastic: bool = False,
    ) -> None:
        super().__init__()
        if state_dim < 1 or max_layers < 1:
            raise ValueError(f"state_dim={state_dim} and max_layers={max_layers} must be ≥ 1")
        self.state_dim = state_dim
        self.max_layers = max_layers
        self.data_action = data_action
        self.elastic = elastic
        self.hidden_dim = hidden
        self.action_dim = (max_layers + 1 + (1 + len(self.STRATEGIES) if data_action else 0)
                           + int(elastic))  # fmt: skip
        self.body = nn.Sequential(
            nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.mean = nn.Linear(hidden, self.action_dim)
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        if data_action:  # untrained: about all of the buffer refreshed, under the organism's rule
            with torch.no_grad():
                self.mean.bias[max_layers + 1] = 3.0
                rule = self.STRATEGIES.index(strategy or "reservoir")
                self.mean.bias[max_layers + 2 + rule] = 1.0
        self.log_std = nn.Parameter(torch.full((self.action_dim,), init_log_std))

    def features(self, state: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's hidden representation ``[n, hidden_dim]`` of ``state`` ``[n, state_dim]``
        that the action head reads (``ids`` unused: one agent)."""
        return self.body(state.clamp(-10.0, 10.0))

    def distribution(
        self, state: torch.Tensor, ids: torch.Tensor | None = None
    ) -> GaussianBernoulli:
        """The action distribution for ``state`` ``[n, state_dim]`` (``ids`` unused: one agent).

        Action layout: ``max_layers`` density logits, the annealing gain logit, then with
        ``data_action`` the refresh logit and one logit per :attr:`STRATEGIES` entry, then with
        ``elastic`` the global density logit.
        """
        mean = self.mean(self.features(state))
        return GaussianBernoulli(mean, self.log_std.expand_as(mean), None)

    def amplitude_gain(self, action: torch.Tensor) -> float:
        """The annealing gain in ``[0, 2]`` encoded by ``action`` (one raw General action)."""
        return float(2.0 * torch.sigmoid(action[self.max_layers]))

    def density_logit(self, action: torch.Tensor) -> float | None:
        """The elastic budget's density logit in ``action`` (``None`` without ``elastic``)."""
        return float(action[-1]) if self.elastic else None

    def data(self, action: torch.Tensor) -> DataAction | None:
        """The data side's action encoded by ``action``: refresh share ``sigmoid`` of its logit,
        the rule of the largest strategy logit (``None`` without ``data_action``)."""
        if not self.data_action:
            return None
        refresh = float(torch.sigmoid(action[self.max_layers + 1]))
        end = self.max_layers + 2 + len(self.STRATEGIES)
        choice = int(action[self.max_layers + 2 : end].argmax())
        return DataAction(refresh=refresh, strategy=self.STRATEGIES[choice])
