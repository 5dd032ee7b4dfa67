"""The Scalpel: masked layers, mask mechanisms and the surgery API Emrakul acts through.

Plain PyTorch. See :class:`Scalpel` for the lifecycle, :data:`MECHANISMS` for the mask
mechanisms (hard masks with masked or straight-through gradients, Gumbel-softmax, Hard Concrete,
Gumbel-top-k subsets of units, N:M patterns, adaptive temporal masking), and :func:`flops` for
dense and sparse cost accounting.
"""

from esper.workloads.scalpel.allocation import DISTRIBUTIONS, allocate
from esper.workloads.scalpel.estimators import (
    gumbel_noise,
    logistic_noise,
    masked_straight_through,
    straight_through,
)
from esper.workloads.scalpel.flops import FlopReport, LayerFlops, flops
from esper.workloads.scalpel.mechanisms import (
    MECHANISMS,
    AdaptiveTemporalMask,
    GumbelSoftmaxMask,
    HardConcreteMask,
    HardMask,
    Layer,
    MaskChange,
    Mechanism,
    NMMask,
    StraightThroughMask,
    SubsetMask,
)
from esper.workloads.scalpel.nm import (
    export_semi_structured,
    nm_compatible,
    nm_mask,
    nm_valid,
    nm_violations,
    semi_structured_available,
)
from esper.workloads.scalpel.regrowth import REGROW_INITS, regrow_values, reset_optimizer_state
from esper.workloads.scalpel.scalpel import Scalpel
from esper.workloads.scalpel.selection import (
    gumbel_topk,
    gumbel_topk_blocks,
    relaxed_topk,
    topk_among,
)
from esper.workloads.scalpel.temperature import TEMPERATURE_SCHEDULES, make_temperature_schedule

__all__ = [
    "DISTRIBUTIONS",
    "MECHANISMS",
    "REGROW_INITS",
    "TEMPERATURE_SCHEDULES",
    "AdaptiveTemporalMask",
    "FlopReport",
    "GumbelSoftmaxMask",
    "HardConcreteMask",
    "HardMask",
    "Layer",
    "LayerFlops",
    "MaskChange",
    "Mechanism",
    "NMMask",
    "Scalpel",
    "StraightThroughMask",
    "SubsetMask",
    "allocate",
    "export_semi_structured",
    "flops",
    "gumbel_noise",
    "gumbel_topk",
    "gumbel_topk_blocks",
    "logistic_noise",
    "make_temperature_schedule",
    "masked_straight_through",
    "nm_compatible",
    "nm_mask",
    "nm_valid",
    "nm_violations",
    "regrow_values",
    "relaxed_topk",
    "reset_optimizer_state",
    "semi_structured_available",
    "straight_through",
    "topk_among",
]
