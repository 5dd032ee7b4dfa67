"""Learners that train Emrakul: MAPPO (here) and QMIX (``qmix``), centralized training only."""

from esper.policies.learners.buffers import RolloutBuffer, RunningMeanStd, gae
from esper.policies.learners.mappo import CentralCritic, MAPPOLearner

__all__ = ["CentralCritic", "MAPPOLearner", "RolloutBuffer", "RunningMeanStd", "gae"]
