"""From raw sensor readings to the named features of observations and the global state.

Kept apart from the sensors so that every scaling decision (see
:mod:`esper.workloads.sensors.state`) lives in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from esper.workloads.sensors.activity import ActivityStats
from esper.workloads.sensors.fisher import FGSFSignal
from esper.workloads.sensors.flipflop import FlipFlopStats
from esper.workloads.sensors.gradients import GradientReport, GradientStats
from esper.workloads.sensors.state import GLOBAL_LAYER_FEATURES, LAYER_FEATURES, GlobalState
from esper.workloads.sensors.topology import LayerGraph

__all__ = ["NODE_SENSOR_FEATURES", "global_state", "layer_features", "node_sensor_features"]

NODE_SENSOR_FEATURES = (
    "density",
    "log_fisher_mean",
    "log_gsnr",
    "coherence",
    "slog_hessian_trace",
    "flip_rate",
    "dormant_fraction",
    "rank_ratio",
)
"""Sensor summaries appended to the structural features as topology-GNN node inputs
(``log_*`` ones divided by 10 to keep the inputs near unit scale)."""

_TINY = 1e-12


def _log(x: float) -> float:
    return math.log10(max(x, _TINY)) if math.isfinite(x) else 0.0


def _slog(x: float) -> float:
    return math.copysign(math.log10(1.0 + abs(x)), x) if math.isfinite(x) else 0.0


def _clip(x: float) -> float:
    return max(-10.0, min(10.0, x)) if math.isfinite(x) else 0.0


def layer_features(
    graph: LayerGraph,
    index: int,
    density: float,
    grads: GradientStats,
    hessian_trace: float,
    trends: tuple[float, float],
    fgsf: bool,
    flipflop: FlipFlopStats | None,
    activity: ActivityStats | None,
) -> dict[str, float]:
    """Every :data:`LAYER_FEATURES` value of one layer except ``predicted_impact``, in order."""
    contact = 0.0
    if grads.contact_fisher_trace is not None:
        contact = _log((grads.contact_fisher_trace + _TINY) / (grads.fisher_trace + _TINY))
    out = {
        "density": density,
        "log_fan_in": math.log(graph.fan_in[index]),
        "log_fan_out": math.log(graph.fan_out[index]),
        "log_numel": math.log(graph.numel[index]),
        "depth": graph.depth[index],
        "path_share": graph.path_share[index],
        "log_fisher_trace": _log(grads.fisher_trace),
        "log_fisher_mean": _log(grads.fisher_trace / max(grads.active, 1)),
        "log_gsnr": _log(grads.gsnr_mean),
        "coherence": grads.coherence,
        "log_contact_ratio": contact,
        "slog_hessian_trace": _slog(hessian_trace),
        "fisher_trend": _clip(trends[0]),
        "gsnr_trend": _clip(trends[1]),
        "fgsf": float(fgsf),
        "flip_rate": flipflop.flip_rate if flipflop is not None else 0.0,
        "regrow_reprune_share": flipflop.regrow_reprune_share if flipflop is not None else 0.0,
        "dormant_fraction": activity.dormant_fraction if activity is not None else 0.0,
        "rank_ratio": activity.rank_ratio if activity is not None else 0.0,
    }
    assert tuple(out) == LAYER_FEATURES[:-1]
    return out


def node_sensor_features(features: Mapping[str, float]) -> Tensor:
    """The :data:`NODE_SENSOR_FEATURES` of one layer as a float32 vector."""
    return torch.tensor(
        [features[k] / 10.0 if k.startswith("log_") else features[k] for k in NODE_SENSOR_FEATURES],
        dtype=torch.float32,
    )


def global_state(
    names: tuple[str, ...],
    max_layers: int,
    layers: Mapping[str, Mapping[str, float]],
    report: GradientReport,
    density: Mapping[str, float],
    sizes: Mapping[str, int],
    loss: float,
    loss_trend: float,
    signal: FGSFSignal,
) -> GlobalState:
    """The :class:`GlobalState`: per-slot layer blocks, their mean and max, network features.

    Args:
        names: :func:`~esper.workloads.sensors.state.global_state_names` for ``max_layers``.
        max_layers: Layer slots.
        layers: :func:`layer_features` of each layer, in forward order.
        report: The reading's gradient statistics.
        density: Active fraction per layer.
        sizes: Weight count per layer.
        loss: Mean loss of the sensing batch.
        loss_trend: Relative change of the sensing loss over the FGSF window.
        signal: The FGSF verdict.
    """
    rows = torch.tensor(
        [[1.0, *(f[k] for k in GLOBAL_LAYER_FEATURES[1:])] for f in layers.values()],
        dtype=torch.float32,
    ).reshape(len(layers), len(GLOBAL_LAYER_FEATURES))
    slots = torch.zeros(max_layers, len(GLOBAL_LAYER_FEATURES))
    slots[: len(layers)] = rows
    pooled = [rows[:, 1:].mean(0), rows[:, 1:].amax(0)] if len(layers) else [slots[0, 1:]] * 2
    total = sum(sizes.values())
    network = torch.tensor(
        [
            sum(density[n] * sizes[n] for n in sizes) / max(total, 1),
            _log(report.fisher_trace),
            _log(report.gsnr_mean),
            report.coherence,
            loss if math.isfinite(loss) else 0.0,
            _clip(loss_trend),
            float(signal.fired),
            len(layers) / max_layers,
        ],
        dtype=torch.float32,
    )
    values = torch.cat([slots.reshape(-1), *pooled, network])
    return GlobalState(names, values)
