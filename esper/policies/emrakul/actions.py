"""A Specialist's action and how it becomes a surgery on one layer.

A Specialist chooses, for its layer: the *turnover* (fraction of the layer's active weights
swapped), a mix over pruning criteria (``magnitude``, ``gradient``, ``fisher``, ``gsnr``,
``age``: a high score means keep, so the lowest mixed scores are dropped), a mix over regrowth
criteria (``gradient``: dense ``|∂L/∂w|`` as RigL, Evci et al. 2020; ``accumulated``: the hidden
``|w|`` of pruned weights under straight-through mechanisms, as synaptic flow / DPF, else
``|g|``; ``random`` as SET, Mocanu et al. 2018), a Gumbel temperature ``τ``, a binary *heat*
burst (raised ``τ`` and turnover for a few surgeries, the topological annealing that lets
Lazarus tunnelling emerge) and *sedation* (a learning-rate multiplier for the layer after
surgery).

Decoding: each criterion is rank-normalised to ``[0, 1]`` (scales differ by orders of magnitude),
the mixed score is ``Σ_c π_c · rank_c``, and exactly ``k`` weights are chosen by Gumbel-top-k
(Kool et al. 2019) over ``mixed / τ``: linear cost, exact ``k``. With ``k = turnover · active``
the same ``k`` are dropped and grown, so the layer's density is unchanged, unless the Surgeon
General gave the layer a new kept count, in which case the difference is pruned or grown too.

QMIX needs discrete actions: :data:`DISCRETE_ACTIONS` is a table of turnover × dominant pruning
criterion × regrowth criterion × sedation, and :func:`decode_discrete` maps an index to the same
:class:`SpecialistAction`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from esper.policies.scores import weight_scores
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel.selection import gumbel_topk, gumbel_topk_blocks
from esper.workloads.sensors import rigid_weights

__all__ = [
    "DISCRETE_ACTIONS",
    "FORGET_FRACTION",
    "N_DISCRETE_ACTIONS",
    "PRUNE_CRITERIA",
    "REGROW_CRITERIA",
    "SpecialistAction",
    "decode_discrete",
    "layer_action",
    "mixed_scores",
    "rank_normalise",
    "swap_counts",
]

PRUNE_CRITERIA = ("magnitude", "gradient", "fisher", "gsnr", "age")
"""Pruning criteria a Specialist mixes (high score = keep)."""

REGROW_CRITERIA = ("gradient", "accumulated", "random")
"""Regrowth criteria a Specialist mixes (high score = grow)."""

FORGET_FRACTION = 0.05
"""Fraction of a layer's active weights (highest Fisher diagonal first) a ``forget`` loosens."""


def _simplex(mix: tuple[float, ...], size: int, what: str) -> tuple[float, ...]:
    if len(mix) != size:
        raise ValueError(f"{what} must have {size} weights, got {len(mix)}")
    if any(w < 0 or not math.isfinite(w) for w in mix):
        raise ValueError(f"{what} weights must be finite and ≥ 0, got {mix}")
    total = sum(mix)
    if total <= 0:
        raise ValueError(f"{what} weights must not all be zero")
    return tuple(w / total for w in mix)


@dataclass(frozen=True)
class SpecialistAction:
    """One Specialist's decision for its layer.

    Attributes:
        turnover: Fraction of the layer's active weights dropped and regrown, in ``[0, 1]``.
        prune_mix: Weights over :data:`PRUNE_CRITERIA` (normalised to a simplex).
        regrow_mix: Weights over :data:`REGROW_CRITERIA` (normalised to a simplex).
        tau: Gumbel temperature of the selection (``0``: deterministic top-k).
        heat: Start a heat burst (raised ``τ`` and turnover for a few surgeries).
        sedation: Learning-rate multiplier of the layer after surgery, in ``(0, 1]``.
        sedation_steps: SGD steps the sedation lasts.
        forget: Loosen the layer's most rigid weights if the FGSF trigger fired for it
            (:data:`FORGET_FRACTION` of its active weights by Fisher diagonal, shrunk and
            perturbed: :mod:`esper.workloads.forgetting`).
        protect: Spare the layer's weights that serve tail classes from this surgery's prunes
            and lock the samples they serve in the buffer (synchronized retention on demand,
            :attr:`LayerAction.protect <esper.workloads.actions.LayerAction.protect>`; only an
            organism with a data side has such weights).
    """

    turnover: float = 0.0
    prune_mix: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0)
    regrow_mix: tuple[float, ...] = (1.0, 0.0, 0.0)
    tau: float = 0.0
    heat: bool = False
    sedation: float = 1.0
    sedation_steps: int = 0
    forget: bool = False
    protect: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.turnover <= 1.0:
            raise ValueError(f"turnover={self.turnover} must lie in [0, 1]")
        if self.tau < 0:
            raise ValueError(f"tau={self.tau} must be ≥ 0")
        if not 0.0 < self.sedation <= 1.0:
            raise ValueError(f"sedation={self.sedation} must lie in (0, 1]")
        if self.sedation_steps < 0:
            raise ValueError(f"sedation_steps={self.sedation_steps} must be ≥ 0")
        object.__setattr__(
            self, "prune_mix", _simplex(self.prune_mix, len(PRUNE_CRITERIA), "prune_mix")
        )
        object.__setattr__(
            self, "regrow_mix", _simplex(self.regrow_mix, len(REGROW_CRITERIA), "regrow_mix")
        )

    def heated(
        self, tau_factor: float, turnover_factor: float, max_turnover: float
    ) -> SpecialistAction:
        """The action during a heat burst: ``τ`` and turnover raised (turnover capped)."""
        return replace(
            self,
            tau=max(self.tau, 1e-3) * tau_factor,
            turnover=min(max_turnover, self.turnover * turnover_factor),
        )


_RADIX_FROM = 4096
"""Scores from this many entries are ordered by two radix passes (:func:`stable_order`)."""


def stable_order(values: np.ndarray) -> np.ndarray:
    """The indices that sort float32 ``values`` (no NaN) ascending, ties by position: the
    order of a stable comparison sort (``-0.0`` ties ``+0.0``).

    From :data:`_RADIX_FROM` entries on, a least-significant-digit radix sort does it: the
    floats are mapped to unsigned integers of the same order and sorted stably by their low,
    then their high 16 bits, two passes that NumPy's stable sort runs as counting sorts
    (Knuth, TAOCP vol. 3, §5.2.5). For the continuous scores of a 16k-weight layer about three
    times as fast on this project's CPU as NumPy's comparison sort, which is kept for small or
    heavily tied arrays.
    """
    if values.size < _RADIX_FROM:
        return np.argsort(values, kind="stable")
    bits = (values + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0
    negative = (bits >> 31).astype(bool)
    key = np.where(negative, ~bits, bits | np.uint32(0x80000000))  # order-preserving
    low = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    high = np.argsort((key[low] >> 16).astype(np.uint16), kind="stable")
    return low[high]


def rank_normalise(x: torch.Tensor) -> torch.Tensor:
    """Ranks of the entries of 1-D ``x`` scaled to ``[0, 1]`` (0 = smallest).

    Non-finite entries rank lowest; ties are broken by position (stable sort).
    """
    flat = x.detach().reshape(-1).float().cpu().numpy()
    flat = np.where(np.isfinite(flat), flat, np.float32(-np.inf))
    n = flat.size
    order = stable_order(flat)
    ranks = np.empty(n, dtype=np.float32)
    ranks[order] = np.arange(n, dtype=np.float32)
    return torch.from_numpy(ranks / np.float32(max(n - 1, 1)))


def mixed_scores(
    scores: dict[str, torch.Tensor],
    criteria: tuple[str, ...],
    mix: tuple[float, ...],
    ranked: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """``Σ_c π_c · rank(score_c)`` over the criteria with non-zero weight.

    ``ranked`` memoises ranks by score tensor (``id → (tensor, ranks)``, the tensor kept so
    that its ``id`` stays its own): a layer's pruning and regrowth mixes share their gradient
    scores, and ranking (a sort of the whole layer) is most of a decision's cost.
    """
    out: torch.Tensor | None = None
    for name, weight in zip(criteria, mix, strict=True):
        if weight <= 0:
            continue
        score = scores[name]
        known = None if ranked is None else ranked.get(id(score))
        if known is not None and known[0] is score:
            ranks = known[1]
        else:
            ranks = rank_normalise(score)
            if ranked is not None:
                ranked[id(score)] = (score, ranks)
        term = weight * ranks
        out = term if out is None else out + term
    if out is None:
        raise ValueError("the mix has no positive weight")
    return out


def swap_counts(active: int, numel: int, turnover: float, target: int | None) -> tuple[int, int]:
    """How many weights to drop and grow.

    ``k = round(turnover · active)`` are swapped; if ``target`` (a kept count from the Surgeon
    General) differs from ``active``, the difference is pruned or grown on top. Both counts are
    clipped to what exists, so the layer ends with exactly ``target`` (or ``active``) weights
    whenever that is feasible.
    """
    target = active if target is None else max(0, min(numel, target))
    k = round(turnover * active)
    delta = target - active
    drop, grow = k + max(-delta, 0), k + max(delta, 0)
    drop = min(drop, active)
    # After dropping, numel − (active − drop) positions are empty; never grow more than that.
    grow = min(grow, numel - active + drop, target - (active - drop))
    return drop, max(grow, 0)


def _regrow_sources(
    organism: Organism,
    step: OrganismStep,
    name: str,
    generator: torch.Generator,
    gradient: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Regrowth scores; ``gradient``: the pruning decision's gradient scores, reused (the
    same tensor, so its ranks are too)."""
    if gradient is None:
        base = weight_scores(organism, step, name, generator, ("gradient", "random"))
    else:
        base = {"gradient": gradient, **weight_scores(organism, step, name, generator, ("random",))}
    if organism.scalpel.mechanism.hidden_weights:
        weight = dict(organism.host.named_parameters())[name].detach().reshape(-1)
        base["accumulated"] = weight.abs().cpu()
    else:
        base["accumulated"] = base["gradient"]
    return base


def layer_action(
    action: SpecialistAction,
    organism: Organism,
    step: OrganismStep,
    name: str,
    generator: torch.Generator,
    target: int | None = None,
    regrow_init: str = "zero",
    mechanism_tau: bool = False,
    heat: bool = False,
    heat_factor: float | None = None,
) -> LayerAction:
    """Decode ``action`` on layer ``name`` into the organism's :class:`LayerAction`.

    Args:
        action: The Specialist's decision.
        organism: The organism (masks, weights, dense gradients).
        step: Its last step (sensor reading for Fisher and GSNR).
        name: Layer (full parameter name).
        generator: Random stream for Gumbel noise and the ``random`` criterion.
        target: Kept-weight count set by the Surgeon General (``None``: keep the density).
        regrow_init: Initial value of regrown weights (``zero`` as RigL).
        mechanism_tau: Also pin the mask mechanism's temperature to ``τ`` (only for mechanisms
            that have one).
        heat: Whether the layer is in a heat burst (recorded on its events with ``τ``).
        heat_factor: Heat the mechanism's temperature by this factor during a burst, where the
            mechanism has one and ``mechanism_tau`` does not pin it (``None``: no heat). Out of
            a burst, or without a factor, the layer's temperature is its configured one (a
            factor of 1, which records nothing unless the layer was heated).
    """
    mask = organism.scalpel.mask(name).reshape(-1).cpu()  # the decision is made on the CPU
    active = int(mask.count_nonzero())
    drop_k, grow_k = swap_counts(active, mask.numel(), action.turnover, target)
    prune = torch.empty(0, dtype=torch.long)
    regrow = torch.empty(0, dtype=torch.long)
    scores: dict[str, torch.Tensor] = {}
    ranked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if drop_k:
        used = tuple(c for c, w in zip(PRUNE_CRITERIA, action.prune_mix, strict=True) if w > 0)
        scores = weight_scores(organism, step, name, generator, used)
        keep = mixed_scores(scores, PRUNE_CRITERIA, action.prune_mix, ranked)
        s = torch.where(mask, -keep, torch.full_like(keep, -float("inf")))
        prune = gumbel_topk(s, drop_k, action.tau, generator)
    if grow_k:
        sources = _regrow_sources(organism, step, name, generator, scores.get("gradient"))
        grow = mixed_scores(sources, REGROW_CRITERIA, action.regrow_mix, ranked)
        empty = ~mask
        empty[prune] = False  # a weight just pruned is not regrown in the same surgery
        if int(empty.count_nonzero()) < grow_k:
            empty = ~mask
            empty[prune] = True
        s = torch.where(empty, grow, torch.full_like(grow, -float("inf")))
        if (pattern := organism.scalpel.block_pattern(name)) is not None:  # N:M: room per block
            n, m = pattern
            after = mask.clone()
            after[prune] = False
            room = (n - after.view(-1, m).sum(dim=1)).clamp_min(0)
            regrow = gumbel_topk_blocks(s, grow_k, m, room, action.tau, generator)
        else:
            regrow = gumbel_topk(s, min(grow_k, int(empty.count_nonzero())), action.tau, generator)
    tau = tau_factor = None
    if _has_temperature(organism, name):  # a heated layer cools whenever heat stops acting
        tau = action.tau if mechanism_tau else None
        hot = heat and heat_factor is not None
        tau_factor = None if mechanism_tau else (heat_factor if hot else 1.0)
    forget = torch.empty(0, dtype=torch.long)
    if action.forget and name in step.info.get("fgsf", ()):
        fisher = weight_scores(organism, step, name, generator, ("fisher",))["fisher"]
        forget = rigid_weights(fisher, FORGET_FRACTION, mask)
    return LayerAction(
        prune=prune,
        regrow=regrow,
        forget=forget,
        regrow_init=regrow_init,
        tau=tau,
        tau_factor=tau_factor,
        policy_tau=action.tau,
        heat=heat,
        sedation=action.sedation,
        sedation_steps=action.sedation_steps if action.sedation < 1.0 else 0,
        protect=action.protect,
    )


def _has_temperature(organism: Organism, name: str) -> bool:
    try:
        organism.scalpel.temperature(name)
    except (KeyError, ValueError, NotImplementedError):
        return False
    return True


# -- the discrete table (QMIX) ------------------------------------------------------------------

_TURNOVERS = (0.05, 0.15, 0.3)
_DISCRETE_PRUNE = ("magnitude", "fisher", "gsnr")
_DISCRETE_REGROW = ("gradient", "random")
_SEDATIONS = (1.0, 0.5)
_DISCRETE_TAU = 0.01
_HOT_TAU = 1.0
_DISCRETE_SEDATION_STEPS = 10


def _one_hot(criteria: tuple[str, ...], chosen: str) -> tuple[float, ...]:
    return tuple(1.0 if c == chosen else 0.0 for c in criteria)


def _table() -> tuple[SpecialistAction, ...]:
    rows = [SpecialistAction(turnover=0.0)]  # index 0: leave the layer alone
    for turnover, prune, regrow, sedation in itertools.product(
        _TURNOVERS, _DISCRETE_PRUNE, _DISCRETE_REGROW, _SEDATIONS
    ):
        rows.append(
            SpecialistAction(
                turnover=turnover,
                prune_mix=_one_hot(PRUNE_CRITERIA, prune),
                regrow_mix=_one_hot(REGROW_CRITERIA, regrow),
                tau=_DISCRETE_TAU,
                sedation=sedation,
                sedation_steps=_DISCRETE_SEDATION_STEPS if sedation < 1.0 else 0,
            )
        )
    magnitude = _one_hot(PRUNE_CRITERIA, "magnitude")
    gradient = _one_hot(REGROW_CRITERIA, "gradient")
    rows += [
        SpecialistAction(turnover=0.0, forget=True),  # loosen the rigid weights (if FGSF fired)
        SpecialistAction(0.15, magnitude, gradient, tau=_DISCRETE_TAU, heat=True),  # heat burst
        SpecialistAction(0.15, magnitude, gradient, tau=_HOT_TAU),  # a hot (exploring) swap
    ]
    return tuple(rows)


DISCRETE_ACTIONS: tuple[SpecialistAction, ...] = _table()
"""Index 0 is "no surgery"; then turnover {5, 15, 30 %} × dominant pruning criterion
{magnitude, fisher, gsnr} × regrowth {gradient, random} × sedation {none, ×0.5 for 10 steps}
(τ = 0.01); then FGSF's forget, a heat burst, and a 15% swap at τ = 1 (near-random choice)."""

N_DISCRETE_ACTIONS = len(DISCRETE_ACTIONS)
"""Size of :data:`DISCRETE_ACTIONS` (40)."""


def decode_discrete(index: int) -> SpecialistAction:
    """The :class:`SpecialistAction` of discrete action ``index``.

    Raises:
        IndexError: ``index`` outside ``[0, N_DISCRETE_ACTIONS)``.
    """
    if not 0 <= int(index) < N_DISCRETE_ACTIONS:
        raise IndexError(f"discrete action {index} outside [0, {N_DISCRETE_ACTIONS})")
    return DISCRETE_ACTIONS[int(index)]
