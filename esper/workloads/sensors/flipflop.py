"""The flip-flop detector: weights that are pruned, regrown and pruned again.

Dynamic sparse training can oscillate: the same connection is dropped, regrown and dropped
within a few mask updates, wasting updates and destabilising the layer (the mask-update
instability discussed for RigL by Evci et al. 2020, "Rigging the Lottery", ICML,
arXiv 1911.11134, and measured as mask "flips" by Liu et al. 2021, "Do We Actually Need Dense
Over-Parameterization? In-Time Over-Parameterization in Sparse Training", ICML,
arXiv 2102.02887). The detector keeps the last ``window`` masks of every layer and reports,
per weight, how often its state changed between consecutive masks in the window; per layer,
the flip rate (flips per weight per update); the reversal rate (the fraction of weights whose
change at the latest update undid a change made earlier in the window: turnover that moves on
to new weights is not a reversal, a weight dropped and regrown, or regrown and dropped, is);
and the flat indices of weights that oscillate, i.e. whose states within the window contain
inactive → active → inactive.

The history is a small summary kept on the CPU: masks recorded from a CUDA organism are copied
to the CPU once per update, and every statistic is a CPU tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["FlipFlopDetector", "FlipFlopStats"]


@dataclass(frozen=True)
class FlipFlopStats:
    """Mask-flip statistics of one layer over the detector's window.

    Attributes:
        flips: Per weight, the number of state changes between consecutive masks (int64,
            the mask's shape).
        rate: Flips per weight per mask update, in ``[0, 1]`` (0 with fewer than two masks).
        oscillating: Flat indices (int64) of weights pruned, regrown and pruned again
            within the window, ascending.
        oscillating_fraction: ``len(oscillating)`` over the layer's size.
        updates: Number of masks in the window.
        reversal_rate: Fraction of the layer's weights whose state changed at the latest
            update back to a state they had left earlier in the window (0 with fewer than
            three masks).
    """

    flips: Tensor
    rate: float
    oscillating: Tensor
    oscillating_fraction: float
    updates: int
    reversal_rate: float = 0.0


class FlipFlopDetector:
    """Per-weight mask history over the last ``window`` mask updates.

    Args:
        window: Masks kept per layer (at least 3, the shortest oscillation).
    """

    def __init__(self, window: int = 8) -> None:
        if window < 3:
            raise ValueError(f"flip-flop window must be at least 3 mask updates, got {window}")
        self.window = window
        self._history: dict[str, list[Tensor]] = {}
        self._shapes: dict[str, torch.Size] = {}
        self._cache: dict[str, FlipFlopStats] = {}

    def update(self, masks: Mapping[str, Tensor]) -> None:
        """Record one mask update (every layer's mask after it; True = active)."""
        self._cache.clear()
        for name, mask in masks.items():
            if mask.dtype != torch.bool:
                raise ValueError(f"mask {name!r} must be bool, got {mask.dtype}")
            if name in self._shapes and mask.shape != self._shapes[name]:
                raise ValueError(
                    f"mask {name!r} changed shape from {tuple(self._shapes[name])} "
                    f"to {tuple(mask.shape)}"
                )
            self._shapes[name] = mask.shape
            history = self._history.setdefault(name, [])
            history.append(mask.detach().reshape(-1).to("cpu", copy=True))
            del history[: -self.window]

    def layer(self, name: str) -> FlipFlopStats:
        """Statistics of one layer over its window (cached until the next update)."""
        if name in self._cache:
            return self._cache[name]
        history = self._history.get(name)
        if not history:
            raise KeyError(f"no mask recorded for {name!r}; recorded: {', '.join(self._history)}")
        shape = self._shapes[name]
        updates, numel = len(history), history[0].numel()
        masks = torch.stack(history)  # [updates, numel], over the window at once
        changed = masks[1:] != masks[:-1]  # at update t (t ≥ 1)
        flips = changed.sum(dim=0)
        seen_inactive = (~masks).cumsum(dim=0) > 0  # inactive at some mask up to t
        regrown = (masks[1:] & seen_inactive[:-1]).cumsum(dim=0) > 0  # active after inactive
        regrown_before = torch.cat([torch.zeros_like(regrown[:1]), regrown[:-1]])
        oscillating = (regrown_before & ~masks[1:]).any(dim=0)  # inactive again after it
        indices = oscillating.nonzero().view(-1)
        rate = float(flips.sum()) / (numel * (updates - 1)) if updates > 1 else 0.0
        reversal_rate = 0.0
        if updates > 2:  # changed now, and changed earlier in the window: back where it was
            changed_now = changed[-1]
            reversal_rate = float((changed_now & (flips > changed_now.long())).sum()) / numel
        stats = FlipFlopStats(
            flips=flips.view(shape),
            rate=rate,
            oscillating=indices,
            oscillating_fraction=len(indices) / max(numel, 1),
            updates=updates,
            reversal_rate=reversal_rate,
        )
        self._cache[name] = stats
        return stats

    def stats(self) -> dict[str, FlipFlopStats]:
        """Statistics of every layer with a recorded mask."""
        return {name: self.layer(name) for name in self._history}

    def __contains__(self, name: object) -> bool:
        return name in self._history

    def state_dict(self) -> dict[str, Any]:
        """The window and each layer's mask history, oldest first."""
        return {
            "window": self.window,
            "history": {
                n: torch.stack(h).view(len(h), *self._shapes[n]) for n, h in self._history.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (a window of a different length is an error)."""
        if state["window"] != self.window:
            raise ValueError(
                f"state has flip-flop window {state['window']}, this detector {self.window}"
            )
        self._cache.clear()
        self._history = {
            n: [m.reshape(-1).to("cpu", copy=True) for m in h] for n, h in state["history"].items()
        }
        self._shapes = {n: h.shape[1:] for n, h in state["history"].items()}
