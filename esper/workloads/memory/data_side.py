"""The organism's data side at its two timescales, and its events.

Every training step, :meth:`DataSide.mix` adds replayed samples to the stream's batch and
:meth:`DataSide.observe` reads what the network made of them (returning the stream's rows,
which alone are scored online). At each surgery, :meth:`DataSide.operate` finds the tail
classes' serving weights, guards the surgery's prunes when retention is synchronized, refreshes
the buffer (locking the samples the serving weights were measured on) and returns the events:

* ``serve`` (per tail class and layer): the serving weights' indices; ``value`` is the class;
* ``protect`` (per tail class and layer): prunes refused because they serve the class;
* ``retain`` (per class): samples added to the buffer (``detail`` reason ``selected``) or
  locked in it (reason ``served``); ``count`` samples, ``value`` the class;
* ``evict`` (per class): members dropped from the buffer; ``count`` samples, ``value`` the class.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from esper.config import MemoryConfig
from esper.events import SurgicalEvent
from esper.workloads.actions import LayerAction
from esper.workloads.hosts import Host
from esper.workloads.memory.replay import DataAction, Memory
from esper.workloads.memory.retention import Retention
from esper.workloads.memory.selection import SELECTIONS
from esper.workloads.scalpel import Scalpel
from esper.workloads.stream import Batch
from esper.workloads.surgical_events import EventBuilder, EventContext

__all__ = ["DataSide", "check_config"]


class DataSide:
    """A :class:`Memory` and a :class:`Retention` working for one organism.

    Args:
        memory: The replay buffer.
        retention: Tail classes and their serving weights (default: not synchronized).
    """

    def __init__(self, memory: Memory, retention: Retention | None = None) -> None:
        self.memory = memory
        self.retention = retention or Retention()
        self._mixed: Batch | None = None

    def mix(self, batch: Batch) -> Batch:
        """The batch to train on: the stream's rows, then replayed ones."""
        self._mixed = self.memory.mix(batch)
        return self._mixed

    def observe(self, out: Tensor) -> Tensor:
        """After a training step on :meth:`mix`'s batch (its outputs ``out``): the outputs of
        the stream's rows."""
        mixed, self._mixed = self._mixed, None
        if mixed is None:
            raise RuntimeError("DataSide.observe() without a mix() before it")
        return self.memory.observe(mixed, out)

    def operate(
        self,
        host: Host,
        scalpel: Scalpel,
        actions: Mapping[str, LayerAction],
        data: DataAction | None,
        events: EventBuilder,
        ctx: EventContext,
    ) -> tuple[dict[str, LayerAction], list[SurgicalEvent]]:
        """At a surgery: guard its actions, refresh the buffer; returns the actions to apply
        and the data side's events."""
        masks = scalpel.masks()
        serving = self.retention.serving(host, self.memory, masks)
        guarded = self.retention.guard(actions, serving)
        locked = self.retention.locks(self.memory, serving, actions)
        refresh = self.memory.refresh(data, locked, embed=_embedder(host))
        out: list[SurgicalEvent] = []
        for label in sorted(serving.weights):
            for name, idx in serving.weights[label].items():
                out.append(events.event(ctx, name, "serve", idx, value=float(label)))
        for (label, name), idx in sorted(guarded.refused.items()):
            out.append(events.event(ctx, name, "protect", idx, value=float(label)))
        detail = {"strategy": (data or self.memory.default).strategy
                  or self.memory.default.strategy}  # fmt: skip
        for action, reason, counts in (
            ("retain", "selected", refresh.added),
            ("retain", "served", refresh.locked),
            ("evict", "replaced", refresh.evicted),
        ):
            for label, count in sorted(counts.items()):
                event = events.event(ctx, "", action, value=float(label))
                event.count = count
                event.detail = json.dumps({**detail, "reason": reason})
                out.append(event)
        return guarded.actions, out

    def state_dict(self) -> dict[str, Any]:
        """The memory's state (the retention is configuration only)."""
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.memory.load_state_dict(dict(state["memory"]))


def _embedder(host: Host) -> Callable[[Tensor, Tensor], Tensor]:
    """Last-layer gradient embeddings ``softmax(z) − onehot(y)`` of a batch (CRAIG)."""

    @torch.no_grad()
    def embed(x: Tensor, y: Tensor) -> Tensor:
        logits = host(x)
        return logits.softmax(dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)

    return embed


def check_config(m: MemoryConfig) -> None:
    """Refuse a bad ``workload.memory`` before any work.

    Raises:
        ValueError: naming the key and what is allowed.
    """
    if m.capacity < 0:
        raise ValueError(
            f"workload.memory.capacity must be ≥ 0 (0: no data side), got {m.capacity}"
        )
    if m.strategy not in SELECTIONS:
        raise ValueError(
            f"unknown selection {m.strategy!r} at workload.memory.strategy; valid selections: "
            f"{', '.join(SELECTIONS.names())}"
        )
    if not (math.isfinite(m.replay_ratio) and m.replay_ratio >= 0):
        raise ValueError(f"workload.memory.replay_ratio must be ≥ 0, got {m.replay_ratio}")
    if not 0.0 <= m.refresh <= 1.0:
        raise ValueError(f"workload.memory.refresh must lie in [0, 1], got {m.refresh}")
    allowed = [n for n in inspect.signature(Retention).parameters if n != "synchronized"]
    for name in m.retention:
        if name not in allowed:
            raise ValueError(
                f"unknown key workload.memory.retention.{name}; allowed: {', '.join(allowed)}"
            )
    try:
        Retention(**dict(m.retention))
    except (TypeError, ValueError) as err:
        raise ValueError(f"workload.memory.{err}") from err
