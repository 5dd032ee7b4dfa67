"""The elastic budget: a global density that breathes while a run's mean FLOPs stay on budget.

A fixed budget keeps the active parameter count constant, so an organism cannot spend more
capacity right after a drift and save it back during consolidation. Under an elastic budget a
surgeon asks, at every surgery, for a global density in ``[low, high]``, and
:class:`ElasticBudget` grants the nearest density that keeps the run's **mean forward FLOPs**
(sparse ÷ dense MACs, :func:`esper.workloads.scalpel.flops`, averaged over SGD steps) reachable:
with ``R`` steps left, ``A`` FLOPs-steps of the budget unspent and ``Δ`` steps until the next
surgery, the next interval's ratio ``r`` must let the rest of the run land on the budget with
ratios inside ``[r_low, r_high]``,

    ``A − r_high · (R − Δ) ≤ r · Δ ≤ A − r_low · (R − Δ)``,

and the last interval gets exactly ``A / R``. It is a token bucket with a known horizon (the
stream's length): saving early buys spending later, and debt must be repaid before the end, so
the run's mean equals the budget up to the rounding of kept-weight counts. This is the hard
form of the constraint (as AMC, He et al. 2018, clips the agent's action to its FLOPs budget);
the reward's FLOPs term then prices *when* the FLOPs are spent rather than how many.

FLOPs, not weights, are the currency: on a CNN a weight of the first convolution costs as many
MACs as it has output positions. :class:`FlopCost` prices a kept-weight allocation per layer,
and :meth:`ElasticBudget.allocate` searches the global density whose allocation (by the
surgeon's own layer rule) costs the granted ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from esper.workloads.organism import Organism

__all__ = ["ElasticBudget", "FlopCost", "elastic_bounds"]


def elastic_bounds(budget: float, span: float) -> tuple[float, float]:
    """The density range ``[budget / span, min(1, budget · span)]`` of an elastic budget.

    Raises:
        ValueError: ``budget`` outside ``(0, 1]`` or ``span < 1``.
    """
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget={budget} must lie in (0, 1]")
    if span < 1.0:
        raise ValueError(f"elastic_span={span} must be ≥ 1 (1: a fixed budget)")
    return budget / span, min(1.0, budget * span)


@dataclass(frozen=True)
class FlopCost:
    """Forward MACs of a kept-weight allocation, as a ratio to the dense network.

    Attributes:
        fixed: MACs of everything no mask governs (unmasked layers, attention products).
        per_weight: MACs one kept weight of each masked layer costs (its dense MACs over its
            weights: the positions it is applied at), in the Scalpel's layer order.
        dense: Dense MACs of the whole network.
    """

    fixed: float
    per_weight: tuple[float, ...]
    dense: float

    @classmethod
    def of(cls, organism: Organism) -> FlopCost:
        """The cost model of ``organism``'s host under its current masks."""
        report = organism.scalpel.flops(organism.stream.source.input_shape)
        names = organism.scalpel.names
        masked = sum(report.per_layer[n].sparse for n in names)
        per_weight = tuple(report.per_layer[n].dense / organism.scalpel.numel(n) for n in names)
        return cls(float(report.sparse - masked), per_weight, float(report.dense))

    def ratio(self, counts: Sequence[int]) -> float:
        """Sparse ÷ dense MACs with ``counts`` kept weights per masked layer."""
        if len(counts) != len(self.per_weight):
            raise ValueError(f"{len(counts)} counts for {len(self.per_weight)} masked layers")
        masked = sum(c * w for c, w in zip(counts, self.per_weight, strict=True))
        return (self.fixed + masked) / self.dense if self.dense else 1.0


@dataclass
class ElasticBudget:
    """Grants densities in ``[low, high]`` so that a run's mean FLOPs ratio equals ``budget``.

    Args:
        budget: The run's mean FLOPs ratio to hold (for an MLP whose every layer is masked, its
            mean global density).
        low: Lowest global density a surgery may hold.
        high: Highest global density a surgery may hold.
        horizon: SGD steps of the run (the stream's length).
        spent: FLOPs-ratio × steps used so far (state).
        elapsed: SGD steps accounted so far (state).
    """

    budget: float
    low: float
    high: float
    horizon: int
    spent: float = 0.0
    elapsed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.budget <= self.high <= 1.0:
            raise ValueError(
                f"need 0 ≤ low ({self.low}) ≤ budget ({self.budget}) ≤ high ({self.high}) ≤ 1"
            )
        if self.horizon < 1:
            raise ValueError(f"horizon={self.horizon} must be ≥ 1 SGD step")

    def record(self, ratio: float, until: int) -> None:
        """Account the FLOPs ratio held from the last record up to SGD step ``until``."""
        steps = max(0, min(until, self.horizon) - self.elapsed)
        self.spent += ratio * steps
        self.elapsed += steps

    def bounds(self, interval: int, cost: FlopCost, sizes: Sequence[int]) -> tuple[float, float]:
        """The FLOPs ratios the next ``interval`` steps may hold while the rest of the run can
        still meet the budget (both ends equal on the last interval)."""
        left = self.horizon - self.elapsed
        owed = self.budget * self.horizon - self.spent
        r_low = cost.ratio([math.ceil(self.low * n) for n in sizes])
        r_high = cost.ratio([math.floor(self.high * n) for n in sizes])
        if left <= 0:
            return r_low, r_high  # past the horizon: nothing left to hold
        delta = min(interval, left)
        if delta == left:
            exact = owed / left
            return exact, exact
        lo = (owed - r_high * (left - delta)) / delta
        hi = (owed - r_low * (left - delta)) / delta
        return max(r_low, lo), min(r_high, hi)

    def grant(
        self,
        request: float,
        interval: int,
        cost: FlopCost,
        sizes: Sequence[int],
        allocate: Callable[[float], Sequence[int]],
    ) -> tuple[float, list[int]]:
        """The density nearest ``request`` whose allocation keeps the budget, and the counts.

        Args:
            request: The surgeon's density, clipped to ``[low, high]``.
            interval: SGD steps until the next surgery.
            cost: The host's :class:`FlopCost`.
            sizes: Weights per masked layer.
            allocate: The surgeon's layer rule: global density → kept counts per layer.
        """
        density = min(self.high, max(self.low, request))
        lo, hi = self.bounds(interval, cost, sizes)
        counts = list(allocate(density))
        ratio = cost.ratio(counts)
        if lo - 1e-12 <= ratio <= hi + 1e-12:
            return density, counts
        goal = min(max(ratio, lo), hi)
        a, b = (self.low, density) if ratio > goal else (density, self.high)
        for _ in range(40):  # the allocation's cost rises with the density: bisect
            mid = 0.5 * (a + b)
            if cost.ratio(allocate(mid)) < goal:
                a = mid
            else:
                b = mid
        below, above = list(allocate(a)), list(allocate(b))
        pick = min((below, above), key=lambda c: abs(cost.ratio(c) - goal))
        return (a if pick is below else b), pick

    @property
    def sustainable(self) -> float:
        """The FLOPs ratio that, held for the rest of the run, lands on the budget."""
        left = self.horizon - self.elapsed
        return (self.budget * self.horizon - self.spent) / left if left > 0 else self.budget

    @property
    def mean(self) -> float:
        """The mean FLOPs ratio over the steps accounted so far."""
        return self.spent / self.elapsed if self.elapsed else float("nan")

    @property
    def saved(self) -> float:
        """Budget saved so far (positive) or borrowed (negative), in FLOPs-ratio × steps over
        the whole run's budget: what the surgeon can still spend above the budget."""
        return (self.budget * self.elapsed - self.spent) / (self.budget * self.horizon)

    def state_dict(self) -> dict[str, Any]:
        """Settings and the account."""
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        restored = ElasticBudget(**dict(state))
        self.__dict__.update(restored.__dict__)


class ElasticDensity:
    """An elastic budget as a surgeon holds it: the account, the host's cost model and the
    density the surgeon last asked for.

    Args:
        budget: Mean FLOPs ratio to hold.
        span: The density range is ``[budget / span, budget · span]`` (:func:`elastic_bounds`).
        organism: The organism, at reset (its stream's length is the horizon).
    """

    FEATURES = ("elastic_saved", "elastic_left", "elastic_request")
    """What a learned surgeon sees of its account: budget saved (+) or borrowed (−) over the
    run's budget, the share of the run left, and its current request within ``[low, high]``."""

    def __init__(self, budget: float, span: float, organism: Organism) -> None:
        low, high = elastic_bounds(budget, span)
        self.account = ElasticBudget(budget, low, high, len(organism.stream))
        self.cost = FlopCost.of(organism)
        self.names = tuple(organism.scalpel.names)
        self.sizes = tuple(organism.scalpel.numel(n) for n in self.names)
        self.interval = organism.K
        self.request = budget

    def ask(self, density: float) -> None:
        """Ask for ``density`` (clipped to ``[low, high]``) from the next surgery on."""
        self.request = min(self.account.high, max(self.account.low, float(density)))

    def ask_logit(self, raw: float) -> None:
        """Ask through a learned output: ``low + (high − low) · σ(raw + b)``, with ``b`` such
        that ``raw = 0`` asks for the budget (an untrained surgeon holds it)."""
        a = self.account
        share = (a.budget - a.low) / (a.high - a.low) if a.high > a.low else 0.5
        share = min(max(share, 1e-6), 1 - 1e-6)
        bias = math.log(share / (1.0 - share))
        self.ask(a.low + (a.high - a.low) / (1.0 + math.exp(-(raw + bias))))

    def features(self) -> list[float]:
        """:data:`FEATURES`, each in about ``[−1, 1]``."""
        a = self.account
        spread = a.high - a.low
        request = (self.request - a.low) / spread if spread > 0 else 0.5
        return [a.saved, 1.0 - a.elapsed / a.horizon, request]

    def settle(self, organism: Organism) -> tuple[float, float]:
        """Account what the organism held since the last settlement (idempotent within a
        surgery); returns its global density and FLOPs ratio now."""
        held = [int(organism.scalpel.mask(n).count_nonzero()) for n in self.names]
        ratio = self.cost.ratio(held)
        self.account.record(ratio, organism.sgd_step)
        return sum(held) / sum(self.sizes), ratio

    def sustainable_density(self, organism: Organism) -> float:
        """The global density that, held from now on, would land the run on its budget (the
        sustainable FLOPs ratio scaled by the host's current density per ratio)."""
        density, ratio = self.settle(organism)
        return density * self.account.sustainable / ratio if ratio > 0 else self.account.budget

    def counts(
        self, organism: Organism, allocate: Callable[[float], Sequence[int]]
    ) -> tuple[float, list[int]]:
        """Settle the account, then the granted density and kept counts per layer for the next
        interval (``allocate``: the surgeon's global density → kept counts per layer)."""
        self.settle(organism)
        return self.account.grant(self.request, self.interval, self.cost, self.sizes, allocate)

    def state_dict(self) -> dict[str, Any]:
        """Everything it holds: the account, the cost model, the layers and the request."""
        return {
            "account": self.account.state_dict(),
            "cost": asdict(self.cost),
            "names": list(self.names),
            "sizes": list(self.sizes),
            "interval": self.interval,
            "request": self.request,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ElasticDensity:
        """Restore :meth:`state_dict` output (no organism needed)."""
        self = cls.__new__(cls)
        self.account = ElasticBudget(**dict(state["account"]))
        cost = dict(state["cost"])
        self.cost = FlopCost(float(cost["fixed"]), tuple(cost["per_weight"]), float(cost["dense"]))
        self.names = tuple(str(n) for n in state["names"])
        self.sizes = tuple(int(n) for n in state["sizes"])
        self.interval = int(state["interval"])
        self.request = float(state["request"])
        return self
