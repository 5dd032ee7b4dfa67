"""Heuristic surgery baselines, each a :data:`~esper.policies.base.POLICIES` entry.

``dense``, ``static``, ``gmp`` (Zhu & Gupta 2017), ``set`` (Mocanu et al. 2018), ``rigl``
(Evci et al. 2020), ``rigl_elastic`` (RigL breathing on a scripted schedule under an elastic
budget, :mod:`esper.policies.elastic`), ``cbp`` (Dohare et al. 2024), ``redo`` (Sokar et al.
2023), ``periodic_reset`` (Nikishin et al. 2022), ``shrink_perturb`` (Ash & Adams 2020),
``swr`` (selective weight reinitialization, Hernandez-Garcia et al. 2025), ``fgsf`` (static
sparse with Fisher-guided forgetting) and ``random``. The drop-and-grow ones differ only in
their hooks (:mod:`.hooks`: scores in, surgery out) and their drop-fraction schedule
(:mod:`.schedules`); CBP and ReDo reset whole units, SWR single weights; Shrink & Perturb and
periodic resets keep the masks.
"""

from esper.policies.baselines.cbp import CBP
from esper.policies.baselines.dense import Dense
from esper.policies.baselines.drop_and_grow import DropAndGrow
from esper.policies.baselines.elastic_rigl import ElasticRigL
from esper.policies.baselines.fgsf import FGSF
from esper.policies.baselines.gmp import GMP
from esper.policies.baselines.periodic_reset import PeriodicReset
from esper.policies.baselines.random_surgery import RandomSurgery
from esper.policies.baselines.redo import ReDo
from esper.policies.baselines.rigl import RigL
from esper.policies.baselines.schedules import (
    ConstantDropFraction,
    CosineDropFraction,
    CubicSparsity,
    DropFraction,
    UpdateClock,
)
from esper.policies.baselines.shrink_perturb import ShrinkPerturb
from esper.policies.baselines.sparse_evolutionary import SET
from esper.policies.baselines.static import Static
from esper.policies.baselines.swr import SWR

BASELINES = (
    "cbp", "dense", "fgsf", "gmp", "periodic_reset", "random", "redo", "rigl", "rigl_elastic",
    "set", "shrink_perturb", "static", "swr",
)  # fmt: skip
"""The registry names of the heuristic baselines."""

__all__ = [
    "BASELINES",
    "CBP",
    "FGSF",
    "GMP",
    "SET",
    "SWR",
    "ConstantDropFraction",
    "CosineDropFraction",
    "CubicSparsity",
    "Dense",
    "DropAndGrow",
    "DropFraction",
    "ElasticRigL",
    "PeriodicReset",
    "RandomSurgery",
    "ReDo",
    "RigL",
    "ShrinkPerturb",
    "Static",
    "UpdateClock",
]
