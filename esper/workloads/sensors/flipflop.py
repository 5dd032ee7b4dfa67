"""The flip-flop detector: weights that are pruned, regrown and pruned again.

Dynamic sparse training can oscillate: the same connection is dropped, regrown and dropped
within a few mask updates, wasting updates and destabilising the layer (the mask-update
instability discussed for RigL by Evci et al. 2020, "Rigging the Lottery", ICML,
arXiv 1911.11134, and measured as mask "flips" by Liu et al. 2021, "Do We Actually Need Dense
Over-Parameterization? In-Time Over-Parameterization in Sparse Training", ICML,
arXiv 2102.02887). The detector keeps the last ``window`` masks of every layer and reports,
per weight, how often its state changed between consecutive masks in the window, and per layer
the three measures of :mod:`esper.measures`, each defined there once: the flip rate (all
turnover), the reversal rate (turnover undone within the window) and the weights pruned,
regrown and pruned again.

The history is a small summary kept on the CPU: masks recorded from a CUDA organism are copied
to the CPU once per update, and every statistic is a CPU tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esper import measures

__all__ = ["FlipFlopDetector", "FlipFlopStats"]


@dataclass(frozen=True)
class FlipFlopStats:
    """Mask-flip statistics of one layer over the detector's window.

    Attributes:
        flips: Per weight, the number of state changes between consecutive masks (int64,
            the mask's shape).
        flip_rate: Flips per weight per mask update (:func:`esper.measures.flip_rate`).
        regrow_repruned: Flat indices (int64) of weights pruned, regrown and pruned again
            within the window, ascending (:func:`esper.measures.regrow_repruned`).
        regrow_reprune_share: ``len(regrow_repruned)`` over the layer's size.
        updates: Number of masks in the window.
        reversal_rate: Fraction of the layer's weights whose latest change undid an earlier
            one in the window (:func:`esper.measures.reversal_rate`).
    """

    flips: Tensor
    flip_rate: float
    regrow_repruned: Tensor
    regrow_reprune_share: float
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
        masks = torch.stack(history).numpy()  # [updates, numel], over the window at once
        repruned = torch.from_numpy(np.flatnonzero(measures.regrow_repruned(masks)))
        stats = FlipFlopStats(
            flips=torch.from_numpy(measures.flip_counts(masks)).view(shape),
            flip_rate=measures.flip_rate(masks),
            regrow_repruned=repruned,
            regrow_reprune_share=len(repruned) / max(masks.shape[1], 1),
            updates=len(history),
            reversal_rate=measures.reversal_rate(masks),
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
