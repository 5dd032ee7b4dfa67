"""Surgical events: one structured record per (surgery, layer, action).

Every decision an immune system takes is recorded as a :class:`SurgicalEvent`, never as a free
text log line (the way Ray Tune's PBT records each exploit). The fields follow the event-log
contract of the design: the Parquet writer of the platform turns these records into Arrow rows,
and the analysis package reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["ACTIONS", "EVENT_FIELDS", "Action", "SurgicalEvent"]

Action = Literal[
    "prune", "regrow", "sedate", "wake", "budget", "temperature", "reset", "forget",
    "quarantine", "exploit", "restore", "serve", "protect", "retain", "evict",
]  # fmt: skip
ACTIONS: tuple[str, ...] = (
    "prune",
    "regrow",
    "sedate",
    "wake",
    "budget",
    "temperature",
    "reset",
    "forget",
    "quarantine",
    "exploit",
    "restore",
    "serve",
    "protect",
    "retain",
    "evict",
)
"""Every action an event can record; ``quarantine``, ``exploit`` and ``restore`` are the
platform's (an organism set aside after divergence; a population member that copied another's
state; a replica that resumed from an earlier checkpoint because the latest was damaged);
``serve``, ``protect``, ``retain`` and ``evict`` the data side's (weights serving a tail class,
prunes refused because of it, samples kept or admitted and samples evicted, per class:
:mod:`esper.workloads.memory.data_side`)."""


@dataclass
class SurgicalEvent:
    """One surgical decision on one layer.

    Attributes:
        run_id: Run the event belongs to.
        trial_id: Population member (Tune trial).
        replica_id: Replica (organism) within the trial.
        drift: Drift acting on the replica's stream.
        task_index: Task of the stream when the surgery happened.
        sgd_step: SGD steps taken by the host before the surgery.
        surgery_step: Index of the surgery.
        layer: Full parameter name of the prunable tensor (``""`` for organism-wide events).
        action: What was done (see :data:`ACTIONS`).
        count: How many weights changed state (or units touched).
        indices: Flat parameter indices touched.
        density_before: Layer density before the action.
        density_after: Layer density after the action.
        tau: Gumbel temperature of the layer after the action (``nan`` if none).
        value: Action-specific number (learning-rate multiplier of ``sedate``, target density of
            ``budget``, ``nan`` otherwise).
        reward: Reward of the surgery step (filled once the following SGD steps are scored).
        r_accuracy: Accuracy component of the reward (raw, unweighted).
        r_flops: FLOPs component (sparse ÷ dense forward FLOPs).
        r_oscillation: Oscillation component (flip-flop rate).
        r_gsnr: GSNR component (mean layer GSNR, squashed to [0, 1)).
        r_spike: Loss-spike component (relative loss increase after the surgery).
        acc_before: Online accuracy over the steps before the surgery.
        loss_before: Online loss over the steps before the surgery.
        loss_after: Online loss over the steps after the surgery.
        fisher_trace: Empirical Fisher trace of the layer at the surgery.
        gsnr: Mean GSNR of the layer at the surgery.
        hessian_trace: Hutchinson trace of the layer at the surgery.
        flip_rate: Mask flips per weight per update over the sensor's window at the surgery
            (:func:`esper.measures.flip_rate`; ``flipflop_rate`` before schema 4).
        policy_version: Version of the policy weights that decided.
        wall_time: Unix time of the decision.
        detail: Structured context as JSON text (``exploit``: the source trial and the values
            that changed), ``""`` otherwise.
        policy_tau: The selection temperature the surgeon chose for this layer at this surgery
            (Emrakul's Specialist ``τ``, heat included; ``nan`` for surgeons without one). Unlike
            ``tau`` it exists under every mask mechanism.
        heat: Whether the layer was in a heat burst at this surgery (``None``: the surgeon has
            no heat decision).
    """

    run_id: str
    trial_id: str
    replica_id: int
    drift: str
    task_index: int
    sgd_step: int
    surgery_step: int
    layer: str
    action: str
    count: int
    indices: list[int] = field(default_factory=list)
    density_before: float = float("nan")
    density_after: float = float("nan")
    tau: float = float("nan")
    value: float = float("nan")
    reward: float = float("nan")
    r_accuracy: float = float("nan")
    r_flops: float = float("nan")
    r_oscillation: float = float("nan")
    r_gsnr: float = float("nan")
    r_spike: float = float("nan")
    acc_before: float = float("nan")
    loss_before: float = float("nan")
    loss_after: float = float("nan")
    fisher_trace: float = float("nan")
    gsnr: float = float("nan")
    hessian_trace: float = float("nan")
    flip_rate: float = float("nan")
    policy_version: int = 0
    wall_time: float = 0.0
    detail: str = ""
    policy_tau: float = float("nan")
    heat: bool | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; valid actions: {', '.join(ACTIONS)}")

    def to_row(self) -> dict[str, Any]:
        """The event as a plain dict (one event-log row)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SurgicalEvent))
"""Column names of an event-log row, in order."""
