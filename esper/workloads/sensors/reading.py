"""A :class:`Reading`: everything one ``NervousSystem.sense`` call measured."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from esper.workloads.sensors.activity import ActivityStats
from esper.workloads.sensors.fisher import FGSFSignal
from esper.workloads.sensors.flipflop import FlipFlopStats
from esper.workloads.sensors.gradients import GradientReport
from esper.workloads.sensors.hessian import HessianStats
from esper.workloads.sensors.state import GlobalState, Observation

__all__ = ["Reading"]


@dataclass(frozen=True)
class Reading:
    """Everything one ``sense`` call measured.

    Attributes:
        observations: Per layer (by parameter name, forward order), the local observation.
        global_state: The critic's state.
        gradients: Per-sample gradient statistics (Fisher, GSNR, coherence, contact Fisher).
        hessian: Hutchinson estimates per layer (empty when no probe ran this reading).
        activity: ReDo scores and effective rank per layer.
        flipflop: Flip-flop statistics per layer with recorded mask updates.
        fgsf: The FGSF trigger's verdict.
        node_features: Inputs of the topology GNN, ``(layers, features)``.
        embeddings: Topology embedding per layer, ``(layers, embedding)``.
        impact_inputs: Per layer, the impact predictor's features before the action's.
        loss: Mean loss of the sensing batch.
        index: Readings taken before this one.
    """

    observations: dict[str, Observation]
    global_state: GlobalState
    gradients: GradientReport
    hessian: dict[str, HessianStats]
    activity: dict[str, ActivityStats]
    flipflop: dict[str, FlipFlopStats]
    fgsf: FGSFSignal
    node_features: Tensor
    embeddings: Tensor
    impact_inputs: dict[str, Tensor]
    loss: float
    index: int

    def observation_tensor(self) -> Tensor:
        """All layers' observations stacked, ``(layers, observation width)``."""
        return torch.stack([o.to_tensor() for o in self.observations.values()])
