"""The organism's vital signs: what it appends to the global state from its own training.

The sensors read the network; the reward pays for online accuracy, FLOPs and a calm loss. The
Surgeon General and the centralized critic must see what the reward pays for, so every step's
:class:`~esper.workloads.sensors.state.GlobalState` is extended with:

- ``online_accuracy``: online accuracy over the ``K`` steps since the last surgery (the
  reward's accuracy term);
- ``log_online_loss``: ``log10`` of their mean online loss;
- ``online_loss_trend``: relative change of the online loss from the window's first
  ``spike_window`` steps to its last, clipped to ``[−10, 10]`` (recovery is negative);
- ``surprise``: the highest ``spike_window``-step mean loss in the window relative to the
  window's first steps, minus one, clipped to ``[0, 10]``: a rise *within* the window, which a
  shift of the data produces and a calm window does not. It is estimated from the stream's
  own losses only; the ground-truth novelty never reaches the policy;
- ``flops_ratio``: sparse ÷ dense forward FLOPs (the reward's FLOPs term);
- ``topo_mean_i``: the mean over layers of each layer's topology code (a summary of the
  network's shape for the critic, which otherwise sees layers only through per-slot blocks).

Every value is computed from the step's window and reading, so a restored organism rebuilds
the same state without storing it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from esper.workloads.prequential import OnlineWindow
from esper.workloads.sensors.state import Observation

__all__ = ["vital_signs"]


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high) if math.isfinite(value) else 0.0


def _rolling_max(values: list[float], width: int) -> float:
    if len(values) < width:
        return math.nan
    sums = torch.tensor(values, dtype=torch.float64).unfold(0, width, 1).mean(dim=1)
    return float(sums.max())


def vital_signs(
    window: OnlineWindow,
    spike_window: int,
    flops_ratio: float,
    observations: Mapping[str, Observation],
) -> dict[str, float]:
    """The features above, by name, for :meth:`GlobalState.extended
    <esper.workloads.sensors.state.GlobalState.extended>`."""
    loss = window.mean("loss")
    first = window.mean("loss", first=spike_window)
    last = window.mean("loss", last=spike_window)
    ratio = lambda a, b: (a - b) / b if b > 0 else math.nan  # noqa: E731
    signs = {
        "online_accuracy": _clip(window.mean("accuracy"), 0.0, 1.0),
        "log_online_loss": math.log10(max(loss, 1e-12)) if math.isfinite(loss) else 0.0,
        "online_loss_trend": _clip(ratio(last, first), -10.0, 10.0),
        "surprise": _clip(ratio(_rolling_max(window.loss, spike_window), first), 0.0, 10.0),
        "flops_ratio": _clip(flops_ratio, 0.0, 1.0),
    }
    codes = [
        [obs[name] for name in obs.names if name.startswith("topo_")]
        for obs in observations.values()
    ]
    if codes and codes[0]:
        mean = torch.tensor(codes, dtype=torch.float64).mean(dim=0).tolist()
        signs.update({f"topo_mean_{i}": float(v) for i, v in enumerate(mean)})
    return signs
