"""Building surgical-event records from an organism's state.

One :class:`~esper.events.SurgicalEvent` per (surgery, layer, action), with the layer's sensor
readings at the time (Fisher trace, GSNR, Hessian trace, flip-flop rate) and the online metrics
before the surgery. The organism describes the moment once (:class:`EventContext`);
:class:`EventBuilder` fills in the layer's densities, temperature and sensor values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from esper.events import SurgicalEvent
from esper.workloads.scalpel import Scalpel
from esper.workloads.sensors import Reading

__all__ = ["EventBuilder", "EventContext", "sensor_fields"]

_NAN = float("nan")


@dataclass(frozen=True)
class EventContext:
    """When the events of one moment happen, and what the organism knew then.

    Attributes:
        drift: Drift acting on the stream.
        task_index: Task of the stream's latest batch.
        sgd_step: SGD steps taken so far.
        surgery_step: Surgeries so far.
        acc_before: Online accuracy over the steps right before (the spike window).
        loss_before: Online loss over the same steps.
        reading: The latest sensor reading (``None`` before the first).
    """

    drift: str
    task_index: int
    sgd_step: int
    surgery_step: int
    acc_before: float
    loss_before: float
    reading: Reading | None


def sensor_fields(reading: Reading | None, layer: str) -> dict[str, float]:
    """The event columns read from the sensors for ``layer`` (``nan`` where not measured)."""
    out = dict.fromkeys(("fisher_trace", "gsnr", "hessian_trace", "flip_rate"), _NAN)
    if reading is None or not layer:
        return out
    stats = reading.gradients.layers.get(layer)
    if stats is not None:
        out["fisher_trace"], out["gsnr"] = stats.fisher_trace, stats.gsnr_mean
    hessian = reading.hessian.get(layer)
    if hessian is not None:
        out["hessian_trace"] = hessian.trace
    flip = reading.flipflop.get(layer)
    if flip is not None:
        out["flip_rate"] = flip.flip_rate
    return out


class EventBuilder:
    """Makes the events of one organism (one replica of one trial).

    Args:
        scalpel: The organism's masks (densities and temperatures after the action).
        run_id: Identity for events.
        trial_id: Identity for events.
        replica_id: Identity for events.
    """

    def __init__(self, scalpel: Scalpel, run_id: str, trial_id: str, replica_id: int) -> None:
        self.scalpel = scalpel
        self.run_id, self.trial_id, self.replica_id = run_id, trial_id, replica_id

    def event(
        self,
        ctx: EventContext,
        layer: str,
        action: str,
        indices: torch.Tensor | None = None,
        density_before: float | None = None,
        value: float = _NAN,
    ) -> SurgicalEvent:
        """One event of ``action`` on ``layer`` (``""``: organism-wide).

        Args:
            ctx: The moment.
            layer: Full parameter name of the prunable tensor.
            action: One of :data:`esper.events.ACTIONS`.
            indices: Flat parameter indices (or units) touched; ``None`` for actions on none.
            density_before: Layer density before the action (default: as after it).
            value: Action-specific number (sedation multiplier, target density, ...).
        """
        density = self.scalpel.density(layer) if layer else self.scalpel.global_density()
        idx = [] if indices is None else indices.to(torch.int64).reshape(-1).tolist()
        sensed = sensor_fields(ctx.reading, layer)
        return SurgicalEvent(
            run_id=self.run_id,
            trial_id=self.trial_id,
            replica_id=self.replica_id,
            drift=ctx.drift,
            task_index=ctx.task_index,
            sgd_step=ctx.sgd_step,
            surgery_step=ctx.surgery_step,
            layer=layer,
            action=action,
            count=len(idx),
            indices=idx,
            density_before=density if density_before is None else density_before,
            density_after=density,
            tau=self._tau(layer),
            value=value,
            acc_before=ctx.acc_before,
            loss_before=ctx.loss_before,
            fisher_trace=sensed["fisher_trace"],
            gsnr=sensed["gsnr"],
            hessian_trace=sensed["hessian_trace"],
            flip_rate=sensed["flip_rate"],
            wall_time=time.time(),
        )

    def _tau(self, layer: str) -> float:
        if not layer:
            return _NAN
        try:
            return float(self.scalpel.temperature(layer))
        except (KeyError, ValueError):  # the mechanism has no temperature for this tensor
            return _NAN
