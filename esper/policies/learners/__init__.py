"""Learners that train Emrakul (centralized training only): MAPPO and QMIX, registered in
:data:`LEARNERS` behind the :class:`SpecialistLearner` protocol."""

from esper.policies.learners.buffers import RolloutBuffer, RunningMeanStd, gae
from esper.policies.learners.mappo import CentralCritic, MAPPOLearner
from esper.policies.learners.protocol import (
    LEARNERS,
    SpecialistLearner,
    Transition,
    make_learner,
)
from esper.policies.learners.qmix import QMIXLearner
from esper.policies.learners.specialists import MAPPOSpecialists, QMIXSpecialists

__all__ = [
    "LEARNERS",
    "CentralCritic",
    "MAPPOLearner",
    "MAPPOSpecialists",
    "QMIXLearner",
    "QMIXSpecialists",
    "RolloutBuffer",
    "RunningMeanStd",
    "SpecialistLearner",
    "Transition",
    "gae",
    "make_learner",
]
