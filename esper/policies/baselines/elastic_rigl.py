"""RigL with a scripted elastic budget: the control that separates a learned density schedule
from elasticity alone.

An elastic Emrakul may spend more FLOPs after a drift and fewer in consolidation, holding the
same *mean* FLOPs as RigL at a fixed budget (:mod:`esper.policies.elastic`). If it beats RigL,
the gain may be the schedule it learned or just the freedom to breathe. ``rigl_elastic`` has the
freedom and an obvious schedule: it detects a drift from its own loss (the online loss of the
last surgery interval above ``1 + threshold`` times its exponential moving average, Page's
(1954) idea of a change detector in its simplest form), asks for the highest density right
after each detection, and lets the request decay back to the sustainable density ``b`` (the
one that, held from now on, lands the run on its budget: below the budget while repaying a
burst), ``b + (high − b) · exp(−s / decay)`` after ``s`` surgeries. The same account grants it what
keeps the run's mean FLOPs on budget, and the layers keep their relative densities at reset
(ERK or uniform, as RigL). Its swaps are RigL's (Evci et al. 2020: magnitude drop, dense-gradient
growth, cosine drop fraction, ``T_end``); the density change is pruned (lowest ``|w|``) or grown
(highest ``|∂L/∂w|``, at zero) on top of them. It uses no ground truth about the stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from esper.policies.base import POLICIES, topk_among
from esper.policies.baselines.rigl import RigL
from esper.policies.drift import LossDrift
from esper.policies.elastic import ElasticDensity
from esper.policies.emrakul.actions import swap_counts
from esper.policies.emrakul.general import allocate_counts
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ElasticRigL"]


@POLICIES.register("rigl_elastic")
class ElasticRigL(RigL):
    """RigL whose global density jumps after each loss-detected drift and decays back.

    Args:
        alpha: RigL's initial drop fraction.
        delta_t: RigL's ``ΔT``, SGD steps between swaps.
        t_end: RigL's ``T_end`` (the density still breathes after it; only swaps stop).
        regrow_init: Value of regrown weights (RigL: ``zero``).
        seed: Seed of the policy's random stream.
        budget: Mean FLOPs ratio to hold (``None``: the organism's density at reset).
        elastic_span: Densities range over ``[budget / span, budget · span]``.
        threshold: A drift is detected when the interval's loss exceeds ``1 + threshold`` times
            its moving average (> 0).
        smoothing: The moving average's weight on its past, in ``[0, 1)``.
        decay: Surgeries for the request's excess over the sustainable density to fall
            ``e``-fold (> 0).
    """

    name: ClassVar[str] = "rigl_elastic"

    def __init__(
        self,
        alpha: float = 0.3,
        delta_t: int = 100,
        t_end: int = 100_000,
        regrow_init: str = "zero",
        seed: int = 0,
        budget: float | None = None,
        elastic_span: float = 2.0,
        threshold: float = 0.3,
        smoothing: float = 0.8,
        decay: float = 2.0,
    ) -> None:
        super().__init__(alpha, delta_t, t_end, regrow_init, seed)
        self.detector = LossDrift(threshold, smoothing)
        if decay <= 0:
            raise ValueError(f"need decay > 0 surgeries (got {decay})")
        if elastic_span < 1:
            raise ValueError(f"elastic_span={elastic_span} must be ≥ 1")
        self.budget = budget
        self.span = elastic_span
        self.decay = decay
        self.elastic: ElasticDensity | None = None
        self.prior: list[float] = []
        self.since: float = math.inf  # surgeries since the last detected drift
        self.drifts = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Open the account at the budget and note the layers' relative densities."""
        super().reset(organism, first)
        names = organism.scalpel.names
        if any(organism.scalpel.block_pattern(n) is not None for n in names):
            raise ValueError("rigl_elastic resizes layers freely: N:M patterns are not supported")
        budget = self.budget if self.budget is not None else organism.scalpel.global_density()
        self.elastic = ElasticDensity(budget, self.span, organism)
        self.prior = [math.log(max(organism.scalpel.density(n), 1e-6)) for n in names]
        self.detector.reset()
        self.since, self.drifts = math.inf, 0

    def detect(self, loss: float) -> bool:
        """Feed one interval's online loss; whether it marks a drift (:class:`LossDrift`)."""
        return self.detector.update(loss)

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Resize every layer to the granted density and, when RigL's clock is due, swap."""
        if self.elastic is None:
            self.reset(organism, step)
        assert self.elastic is not None
        if self.detect(float(step.info.get("online_loss", math.nan))):
            self.since, self.drifts = 0, self.drifts + 1
        else:
            self.since += 1
        base = self.elastic.sustainable_density(organism)
        high = self.elastic.account.high
        self.elastic.ask(base + (max(high, base) - base) * math.exp(-self.since / self.decay))
        names = organism.scalpel.names
        sizes = [organism.scalpel.numel(n) for n in names]
        _, counts = self.elastic.counts(
            organism, lambda d: allocate_counts(self.prior, sizes, d, 0.0)
        )
        t = organism.sgd_step
        fraction = self.drop_fraction(t) if self.clock.due(t) else 0.0
        actions: dict[str, LayerAction] = {}
        for name, target in zip(names, counts, strict=True):
            mask = organism.scalpel.mask(name).reshape(-1).cpu()
            active = int(mask.count_nonzero())
            drop_k, grow_k = swap_counts(active, mask.numel(), fraction, target)
            prune = regrow = torch.empty(0, dtype=torch.long)
            if drop_k:
                drop = self.drop(organism, step, name, self.generator)
                prune = topk_among(drop, mask, drop_k, largest=False)
            if grow_k:  # among weights inactive before the drop, as RigL; then the dropped
                empty = ~mask
                if int(empty.count_nonzero()) < grow_k:
                    empty[prune] = True
                grow = self.grow(organism, step, name, self.generator)
                regrow = topk_among(grow, empty, min(grow_k, int(empty.count_nonzero())), True)
            if prune.numel() or regrow.numel():
                actions[name] = LayerAction(
                    prune=prune, regrow=regrow, regrow_init=self.regrow_init,
                    target_density=target / mask.numel() if target != active else None,
                )  # fmt: skip
        return actions

    def state_dict(self) -> dict[str, Any]:
        """RigL's state, the account, and the drift detector's."""
        return {
            **super().state_dict(),
            "elastic": None if self.elastic is None else self.elastic.state_dict(),
            "prior": list(self.prior),
            "average": self.detector.average,
            "since": self.since,
            "drifts": self.drifts,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        elastic = state["elastic"]
        self.elastic = None if elastic is None else ElasticDensity.from_state_dict(elastic)
        self.prior = [float(v) for v in state["prior"]]
        self.detector.load_state_dict({"average": state["average"]})
        self.since = float(state["since"])
        self.drifts = int(state["drifts"])
