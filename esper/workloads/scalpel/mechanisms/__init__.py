"""Mask mechanisms, one module each, registered in :data:`MECHANISMS`."""

from esper.workloads.scalpel.mechanisms.atm import AdaptiveTemporalMask
from esper.workloads.scalpel.mechanisms.base import MECHANISMS, Layer, MaskChange, Mechanism
from esper.workloads.scalpel.mechanisms.gated import GatedMask
from esper.workloads.scalpel.mechanisms.gumbel_softmax import GumbelSoftmaxMask
from esper.workloads.scalpel.mechanisms.hard import HardMask, StraightThroughMask
from esper.workloads.scalpel.mechanisms.hard_concrete import HardConcreteMask
from esper.workloads.scalpel.mechanisms.nm_mask import NMMask
from esper.workloads.scalpel.mechanisms.subset import SubsetMask
from esper.workloads.scalpel.mechanisms.tempered import Temperatures

__all__ = [
    "MECHANISMS",
    "AdaptiveTemporalMask",
    "GatedMask",
    "GumbelSoftmaxMask",
    "HardConcreteMask",
    "HardMask",
    "Layer",
    "MaskChange",
    "Mechanism",
    "NMMask",
    "StraightThroughMask",
    "SubsetMask",
    "Temperatures",
]
