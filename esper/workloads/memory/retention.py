"""Synchronized retention: the weights that serve rare samples and the samples they serve
are kept together.

Pruning weights and pruning data can compound (the specification's *double loss*): drop the
weights that carry a rare class and its samples in the buffer are no longer learned; evict the
rare samples and nothing shows those weights matter. :class:`Retention` ties the two sides:

* **tail classes** are those seen in fewer than ``tail_fraction`` of the stream's samples so
  far (and held in the buffer);
* a tail class's **serving weights** are, per layer, the ``serve_fraction`` of active weights
  with the highest contact-aware Fisher diagonal over the class's buffered samples nearest the
  decision boundary (the lowest-margin ``quantile`` of them; Kirkpatrick et al. 2017 for
  Fisher as importance, :func:`~esper.workloads.sensors.gradients.gradient_statistics`);
* when synchronized, a prune of a serving weight is **refused** (and the surgery's regrowth in
  that layer trimmed by as many, so the layer's density holds), and the boundary samples the
  Fisher was measured on are **locked** in the buffer (at most ``lock_fraction × capacity``
  per class), so the protection lasts exactly as long as its samples do.

Serving weights are computed whether or not the retention is synchronized, so an event log
can show double-loss cases in a run that does not avoid them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from esper.workloads.actions import LayerAction
from esper.workloads.memory.replay import Memory
from esper.workloads.sensors.fisher import rigid_weights
from esper.workloads.sensors.gradients import gradient_statistics, margins

__all__ = ["Guarded", "Retention", "Serving"]


@dataclass(frozen=True)
class Serving:
    """What serves each tail class at a surgery.

    Attributes:
        weights: Per class and layer, sorted flat indices of the weights serving it.
        samples: Per class, buffer positions of the samples those weights were measured on
            (its boundary samples), lowest margin first.
    """

    weights: dict[int, dict[str, Tensor]]
    samples: dict[int, Tensor]


@dataclass(frozen=True)
class Guarded:
    """A surgery after the guard: the actions to apply, and per ``(class, layer)`` the prune
    indices refused because they serve that class."""

    actions: dict[str, LayerAction]
    refused: dict[tuple[int, str], Tensor]


class Retention:
    """Finds tail classes and their serving weights; when ``synchronized``, protects both.

    Args:
        tail_fraction: A class is in the tail below this share of the stream so far.
        serve_fraction: Share of a layer's active weights serving each tail class.
        quantile: Boundary share of a class's samples the contact-aware Fisher reads.
        lock_fraction: Most samples locked per tail class, as a share of the capacity.
        synchronized: Refuse prunes of serving weights and lock their samples.
    """

    def __init__(
        self,
        tail_fraction: float = 0.05,
        serve_fraction: float = 0.02,
        quantile: float = 0.5,
        lock_fraction: float = 0.05,
        synchronized: bool = False,
    ) -> None:
        for name, value in (
            ("tail_fraction", tail_fraction),
            ("serve_fraction", serve_fraction),
            ("quantile", quantile),
            ("lock_fraction", lock_fraction),
        ):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"retention {name} must be in (0, 1], got {value}")
        self.tail_fraction = tail_fraction
        self.serve_fraction = serve_fraction
        self.quantile = quantile
        self.lock_fraction = lock_fraction
        self.synchronized = synchronized

    def tail(self, memory: Memory) -> list[int]:
        """Tail classes: seen, below ``tail_fraction`` of the stream, and in the buffer."""
        seen = memory.seen.cpu()
        total = int(seen.sum())
        if total == 0 or memory.size == 0:
            return []
        held = set(memory.buf["y"][: memory.size].tolist())
        share = seen.double() / total
        return [c for c in range(memory.num_classes) if 0 < share[c] < self.tail_fraction
                and c in held]  # fmt: skip

    def boundary(self, host: nn.Module, memory: Memory, label: int) -> Tensor:
        """Buffer positions of class ``label``'s samples nearest the boundary, ``⌈quantile ·
        n⌉`` of them, lowest margin first."""
        x, y = memory.members()
        where = (y == label).nonzero().view(-1)
        with torch.no_grad():
            margin = margins(host(x[where]), y[where])
        k = max(1, math.ceil(self.quantile * where.numel()))
        return where[torch.topk(margin, k, largest=False, sorted=True).indices]

    def serving(self, host: nn.Module, memory: Memory, masks: Mapping[str, Tensor]) -> Serving:
        """Per tail class, the weights serving it and the samples they were measured on (see
        the module docstring)."""
        weights: dict[int, dict[str, Tensor]] = {}
        samples: dict[int, Tensor] = {}
        x, y = memory.members()
        for label in self.tail(memory):
            rows = samples[label] = self.boundary(host, memory, label)
            report = gradient_statistics(host, x[rows], y[rows], params=list(masks), masks=masks)
            weights[label] = {
                name: rigid_weights(stats.fisher, self.serve_fraction, masks[name])
                for name, stats in report.layers.items()
            }
        return Serving(weights, samples)

    def protects(self, actions: Mapping[str, LayerAction]) -> bool:
        """Whether this surgery protects anything: always when synchronized, else when an
        action asks (:attr:`LayerAction.protect`)."""
        return self.synchronized or any(act.protect for act in actions.values())

    def guard(self, actions: Mapping[str, LayerAction], serving: Serving) -> Guarded:
        """The actions with every prune of a serving weight removed (in every layer when
        synchronized, else in the layers whose action asks), the layer's regrowth trimmed by
        as many; and what was refused."""
        if not self.protects(actions) or not serving.weights:
            return Guarded(dict(actions), {})
        guarded: dict[str, LayerAction] = {}
        refused: dict[tuple[int, str], Tensor] = {}
        for name, act in actions.items():
            if not (self.synchronized or act.protect):
                guarded[name] = act
                continue
            prune = torch.as_tensor(act.prune, dtype=torch.int64).reshape(-1).cpu()
            keep = torch.ones(prune.numel(), dtype=torch.bool)
            for label in sorted(serving.weights):
                protected = serving.weights[label].get(name)
                if protected is None or not prune.numel():
                    continue
                hit = keep & torch.isin(prune, protected.cpu())
                if bool(hit.any()):
                    refused[(label, name)] = prune[hit]
                    keep &= ~hit
            if bool(keep.all()):
                guarded[name] = act
                continue
            regrow = torch.as_tensor(act.regrow, dtype=torch.int64).reshape(-1)
            trim = min(int((~keep).sum()), regrow.numel())
            guarded[name] = replace(act, prune=prune[keep], regrow=regrow[: regrow.numel() - trim])
        return Guarded(guarded, refused)

    def locks(
        self, memory: Memory, serving: Serving, actions: Mapping[str, LayerAction] | None = None
    ) -> Tensor:
        """Boolean ``[len(memory)]``: the samples the serving weights were measured on, when
        the surgery protects (at most ``lock_fraction × capacity`` per class, lowest margin
        first)."""
        locked = torch.zeros(memory.size, dtype=torch.bool)
        if not self.protects(actions or {}):
            return locked
        most = max(1, round(self.lock_fraction * memory.capacity))
        for rows in serving.samples.values():
            locked[rows[:most].cpu()] = True
        return locked
