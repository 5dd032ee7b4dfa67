"""Settings of the Nervous System, one documented field each."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SensorConfig", "check_fused"]


@dataclass(frozen=True)
class SensorConfig:
    """How the Nervous System senses; validated on construction."""

    dormant_threshold: float = 0.1
    """ReDo's τ: a unit whose score is at most this is dormant (Sokar et al. 2023)."""
    boundary_quantile: float = 0.25
    """Share of the batch, lowest margins first, over which the contact-aware Fisher is taken."""
    hutchinson_probes: int = 1
    """Rademacher probes per reading; 0 skips Hessian sensing and holds the last estimate."""
    hutchinson_per_layer: bool = False
    """Probe each layer on its own (one HVP per layer and probe, ``L`` times the cost): no
    cross-layer terms in the per-layer traces (:func:`~esper.workloads.sensors.hutchinson`)."""
    hutchinson_every: int = 1
    """Readings from one Hutchinson probing to the next: 1 probes at every reading; ``n`` at
    every ``n``-th (the first included), the smoothed traces holding in between. The probe is
    most of a reading's cost on wide hosts (``sense_vs_step_cpu``), so this divides it."""
    hessian_decay: float = 0.5
    """Weight of the previous smoothed Hutchinson trace in each reading's (0: latest only)."""
    flipflop_window: int = 8
    """Mask updates the flip-flop detector remembers per layer."""
    fisher_window: int = 5
    """Readings over which Fisher saturation, GSNR fall and trends are judged."""
    saturation: float = 0.05
    """FGSF: largest relative spread of the Fisher trace over the window that is saturated."""
    min_rise: float = 0.5
    """FGSF: relative rise of the Fisher trace before the window that counts as risen."""
    gsnr_drop: float = 0.2
    """FGSF: relative fall of the mean GSNR across the window that counts as falling."""
    fgsf_cooldown: int = 10
    """FGSF: readings after firing before the same layer may fire again."""
    history: int = 256
    """Readings kept in the Fisher and loss histories."""
    embedding: int = 8
    """Width of each layer's topology embedding (``topo_*`` features)."""
    gnn_hidden: int = 16
    """Message width of the topology GNN."""
    gnn_rounds: int = 3
    """Message-passing rounds of the topology GNN."""
    gnn_lr: float = 1e-3
    """Step size of the topology GNN's training on observed surgery impacts (one clipped SGD
    step per surgery; 0 keeps its seeded initial weights)."""
    max_layers: int = 16
    """Layer slots in the global state; a host with more prunable tensors is refused."""
    impact_forgetting: float = 0.99
    """Forgetting factor of the surgery-impact predictor's recursive least squares."""
    impact_prior: float = 100.0
    """Initial inverse ridge strength of the surgery-impact predictor."""
    action_features: tuple[str, ...] = ("prune_fraction", "regrow_fraction")
    """Names of the action features the impact predictor takes, in order."""
    reference_action: tuple[float, ...] = (0.1, 0.0)
    """The surgery whose predicted impact each observation reports (one value per action
    feature): by default, pruning a tenth of the layer's active weights."""
    fused: bool = False
    """Fused sensing: the organism keeps the layer traffic of its last ``sense_batches``
    training steps and sums the Fisher, GSNR, coherence and unit activity from it, instead of
    a forward and backward pass of the sensors' own over the same batches (each batch read at
    its step's parameters, before its update). Linear and Conv hosts; not with a data side."""
    seed: int = 0
    """Root seed of the Hutchinson probes and of the topology GNN's initial weights."""

    def __post_init__(self) -> None:
        checks = [
            (self.dormant_threshold >= 0, "dormant_threshold must be >= 0"),
            (0 < self.boundary_quantile <= 1, "boundary_quantile must be in (0, 1]"),
            (self.hutchinson_probes >= 0, "hutchinson_probes must be >= 0"),
            (self.hutchinson_every >= 1, "hutchinson_every must be >= 1"),
            (0 <= self.hessian_decay < 1, "hessian_decay must be in [0, 1)"),
            (self.flipflop_window >= 3, "flipflop_window must be >= 3"),
            (self.fisher_window >= 2, "fisher_window must be >= 2"),
            (self.history > self.fisher_window + 1, "history must exceed fisher_window + 1"),
            (self.embedding >= 1 and self.gnn_hidden >= 1, "embedding and gnn_hidden must be >= 1"),
            (self.gnn_rounds >= 1, "gnn_rounds must be >= 1"),
            (self.gnn_lr >= 0 and math.isfinite(self.gnn_lr), "gnn_lr must be finite and >= 0"),
            (self.max_layers >= 1, "max_layers must be >= 1"),
            (
                len(self.reference_action) == len(self.action_features),
                "reference_action needs one value per action feature",
            ),
            (len(self.action_features) >= 1, "action_features must name at least one feature"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SensorConfig: {message}")


def check_fused(
    *, sense_batches: int, surgery_interval: int, memory_capacity: int = 0, cohort: int = 1
) -> None:
    """Where fused sensing (``SensorConfig.fused``) cannot read an organism's own training
    steps, a ``ValueError`` naming the setting: replay mixed into them (a data side), steps
    batched across a cohort, or fewer steps per surgery than the sensors read."""
    needs = {"workload.memory.capacity": (memory_capacity, 0),
             "policy.training.cohort": (cohort, 1)}  # fmt: skip
    for key, (value, needed) in needs.items():
        if value != needed:
            raise ValueError(
                f"workload.organism.sensors.fused=true reads each organism's own training "
                f"steps: it needs {key}={needed}, got {value}"
            )
    if sense_batches > surgery_interval:
        raise ValueError(
            f"workload.organism.sensors.fused=true reads the last sense_batches training steps "
            f"of each surgery interval: workload.organism.sense_batches={sense_batches} exceeds "
            f"policy.surgery_interval={surgery_interval}"
        )
