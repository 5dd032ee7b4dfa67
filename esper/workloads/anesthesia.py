"""Sedation: damping a layer's learning rate for a few SGD steps after surgery.

Right after a structural change a layer's gradients are large and noisy; sedation multiplies the
layer's learning rate by ``m ∈ (0, 1]`` for the next ``n`` SGD steps, then restores it. It acts
through the optimizer's per-layer parameter groups (one per prunable tensor, named by their
``"layer"`` key: :func:`esper.workloads.factory.build_optimizer`). The policy side of anesthesia
(choosing sedation, harmonic annealing of the density target) is
:mod:`esper.policies.anesthesia`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["Sedation"]


class Sedation:
    """Per-layer learning-rate damping applied through an optimizer's parameter groups.

    Args:
        optimizer: The host's optimizer, with one group per prunable tensor (``"layer"`` key).
        layers: The prunable tensors that may be sedated; each needs a group.

    Raises:
        ValueError: a layer has no parameter group of its own.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, layers: Sequence[str]) -> None:
        self.optimizer = optimizer
        groups = self._groups()
        missing = [n for n in layers if n not in groups]
        if missing:
            raise ValueError(
                f"optimizer has no parameter group for layers {missing}; build it with "
                "esper.workloads.factory.build_optimizer(..., scalpel)"
            )
        self._base_lr = {name: float(groups[name]["lr"]) for name in layers}
        self._active: dict[str, tuple[float, int]] = {}

    def _groups(self) -> dict[str, dict[str, Any]]:
        # Looked up each time: loading optimizer state replaces the group dicts.
        return {g["layer"]: g for g in self.optimizer.param_groups if "layer" in g}

    def sedate(self, layer: str, multiplier: float, steps: int) -> None:
        """Damp ``layer``'s learning rate by ``multiplier`` for the next ``steps`` SGD steps,
        replacing any sedation in progress on it (``steps`` 0 or ``multiplier`` 1 wakes the
        layer: its learning rate is restored at once)."""
        if layer not in self._base_lr:
            raise KeyError(f"cannot sedate {layer!r}: layers are {sorted(self._base_lr)}")
        if steps > 0 and multiplier != 1.0:
            self._active[layer] = (float(multiplier), int(steps))
        elif self._active.pop(layer, None) is not None:
            self._groups()[layer]["lr"] = self._base_lr[layer]

    def before_step(self) -> None:
        """Set this SGD step's learning rates; sedations that ran out are lifted."""
        if not self._active:
            return
        groups = self._groups()
        for name, (multiplier, left) in list(self._active.items()):
            groups[name]["lr"] = self._base_lr[name] * (multiplier if left > 0 else 1.0)
            if left <= 0:
                del self._active[name]
            else:
                self._active[name] = (multiplier, left - 1)

    def state_dict(self) -> dict[str, Any]:
        """Sedations in progress (``layer → (multiplier, steps left)``) and base rates."""
        return {
            "active": {k: (m, n) for k, (m, n) in self._active.items()},
            "base_lr": dict(self._base_lr),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self._active = {str(k): (float(m), int(n)) for k, (m, n) in state["active"].items()}
        self._base_lr = {str(k): float(v) for k, v in state["base_lr"].items()}
