"""An organism's checkpoint: everything it needs to continue bit-exactly, as tensors and plain
data (it loads with ``torch.load(weights_only=True)``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from esper.workloads.anesthesia import Sedation
from esper.workloads.hosts import Host
from esper.workloads.mask_age import MaskAge
from esper.workloads.memory import DataSide
from esper.workloads.prequential import OnlineWindow
from esper.workloads.scalpel import Scalpel
from esper.workloads.sensors import NervousSystem, Reading
from esper.workloads.stream import Batch, DriftStream

__all__ = ["load_organism_state", "organism_state"]


class Organism(Protocol):
    """What of an :class:`~esper.workloads.organism.Organism` its checkpoint holds (a
    protocol, so that this module does not import the organism's)."""

    host: Host
    optimizer: torch.optim.Optimizer
    scalpel: Scalpel
    nervous: NervousSystem
    stream: DriftStream
    sgd_step: int
    surgery_step: int
    sedation: Sedation
    mask_age: MaskAge
    generator: torch.Generator
    data_side: DataSide | None
    device: torch.device
    _recent: list[Batch]
    _window: OnlineWindow
    _last: Reading | None


def organism_state(organism: Organism) -> dict[str, Any]:
    """Host, optimizer, masks, sensors, stream position, counters, sedation, mask ages, the
    recent batches, the online window, the last reading, the organism's generator and its
    data side."""
    o = organism
    return {
        "host": {k: v.detach().clone() for k, v in o.host.state_dict().items()},
        "optimizer": o.optimizer.state_dict(),
        "scalpel": o.scalpel.state_dict(),
        "nervous": o.nervous.state_dict(),
        "stream": o.stream.state_dict(),
        "sgd_step": o.sgd_step,
        "surgery_step": o.surgery_step,
        "sedation": o.sedation.state_dict(),
        "changed_at": o.mask_age.state_dict(),
        "recent": [b.state_dict() for b in o._recent],
        "window": o._window.state_dict(),
        "last": None if o._last is None else o._last.state_dict(),
        "generator": o.generator.get_state(),
        "data_side": None if o.data_side is None else o.data_side.state_dict(),
    }


def load_organism_state(organism: Organism, state: Mapping[str, Any]) -> None:
    """Restore :func:`organism_state` output into an organism built the same way."""
    o = organism
    o.host.load_state_dict(state["host"])
    o.optimizer.load_state_dict(state["optimizer"])
    o.scalpel.load_state_dict(state["scalpel"])
    o.nervous.load_state_dict(state["nervous"])
    o.stream.load_state_dict(state["stream"])
    o.sgd_step = int(state["sgd_step"])
    o.surgery_step = int(state["surgery_step"])
    o.sedation.load_state_dict(state["sedation"])
    o.mask_age.load_state_dict(state["changed_at"])
    o._recent = [Batch(**b).to(o.device) for b in state["recent"]]
    o._window = OnlineWindow.from_state_dict(state["window"])
    o.generator.set_state(state["generator"])
    if o.data_side is not None:
        o.data_side.load_state_dict(state["data_side"])
    last = state["last"]
    o._last = None if last is None else Reading.from_state_dict(last).to(o.device)
