"""A :class:`Reading`: everything one ``NervousSystem.sense`` call measured.

A reading is checkpointed as plain data (:meth:`Reading.state_dict`: nested dicts of tensors,
numbers and strings, each dataclass tagged by its class name) so that organism checkpoints load
with ``torch.load(weights_only=True)``; :meth:`Reading.from_state_dict` rebuilds it, accepting
only the sensor dataclasses listed here (a file cannot name a class to instantiate).

Devices: the per-weight measurements (``gradients``, ``hessian``, ``activity``) are on the host's
device; the summaries (observations, global state, flip-flop statistics, GNN inputs and
embeddings, impact inputs) on the CPU. A checkpoint loads on the CPU; :meth:`Reading.to` puts
the measurements back on the host's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import torch
from torch import Tensor

from esper.workloads.sensors.activity import ActivityStats
from esper.workloads.sensors.fisher import FGSFSignal
from esper.workloads.sensors.flipflop import FlipFlopStats
from esper.workloads.sensors.gradients import GradientReport, GradientStats
from esper.workloads.sensors.hessian import HessianStats
from esper.workloads.sensors.state import GlobalState, Observation

__all__ = ["Reading"]

_TAG = "__dataclass__"


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

    def to(self, device: torch.device | str) -> Reading:
        """The reading with its per-weight measurements (``gradients``, ``hessian``,
        ``activity``) on ``device``; the summaries stay on the CPU."""
        return replace(
            self,
            gradients=_move(self.gradients, device),
            hessian=_move(self.hessian, device),
            activity=_move(self.activity, device),
        )

    def state_dict(self) -> dict[str, Any]:
        """The reading as plain data (tensors cloned), loadable with ``weights_only=True``."""
        state = _encode(self)
        assert isinstance(state, dict)
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Reading:
        """Rebuild a reading from :meth:`state_dict` output.

        Raises:
            ValueError: the data names a class that is not one of the sensor dataclasses.
        """
        reading = _decode(state)
        if not isinstance(reading, Reading):
            raise ValueError("the state does not hold a sensor Reading")
        return reading


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        encoded = {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
        return {_TAG: type(value).__name__, **encoded}
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_encode(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return value


def _move(value: Any, device: torch.device | str) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        moved = {f.name: _move(getattr(value, f.name), device) for f in fields(value)}
        return replace(value, **moved)
    if isinstance(value, Mapping):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_move(v, device) for v in value)
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping):
        if _TAG in value:
            name = value[_TAG]
            if name not in _CLASSES:
                raise ValueError(
                    f"a checkpointed reading names class {name!r}; allowed: {sorted(_CLASSES)}"
                )
            return _CLASSES[name](**{k: _decode(v) for k, v in value.items() if k != _TAG})
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_decode(v) for v in value)
    return value


_CLASSES: dict[str, type] = {
    c.__name__: c
    for c in (
        Reading,
        GradientReport,
        GradientStats,
        HessianStats,
        ActivityStats,
        FlipFlopStats,
        FGSFSignal,
        Observation,
        GlobalState,
    )
}
