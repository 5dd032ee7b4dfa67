"""The composite state as named, fixed-width tensors.

Each Specialist sees one layer's :class:`Observation`; the centralized critic sees the
:class:`GlobalState`. Both carry their feature names, so a feature is found by name and
every width is known before the first reading. The organism may append its own features
(:meth:`Observation.extended`, :meth:`GlobalState.extended`); any name mentioning drift or
novelty is refused, because drift novelty is ground truth kept for analysis and must never
reach the policy.

Scales: ``log_*`` features are ``log10(max(x, 1e-12))``; ``slog_*`` are
``sign(x)·log10(1 + |x|)``; trends are relative changes clipped to ``[−10, 10]``; fractions,
ratios and coherence lie in ``[0, 1]``; the topology embedding in ``[−1, 1]``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "GLOBAL_FEATURES",
    "GLOBAL_LAYER_FEATURES",
    "LAYER_FEATURES",
    "GlobalState",
    "Observation",
    "global_state_names",
    "observation_names",
]

LAYER_FEATURES = (
    "density",  # active fraction of the layer's weights
    "log_fan_in",  # natural log of the fan-in
    "log_fan_out",  # natural log of the fan-out
    "log_numel",  # natural log of the weight count
    "depth",  # longest-path position in the layer graph, in [0, 1]
    "path_share",  # fraction of input-output paths through the layer (1 = bottleneck)
    "log_fisher_trace",  # empirical Fisher trace over active weights
    "log_fisher_mean",  # the same per active weight
    "log_gsnr",  # mean per-weight GSNR over active weights
    "coherence",  # gradient coherence in [0, 1]
    "log_contact_ratio",  # contact-aware Fisher trace / Fisher trace
    "slog_hessian_trace",  # Hutchinson trace (smoothed over readings)
    "fisher_trend",  # relative change of the Fisher trace over the FGSF window
    "gsnr_trend",  # relative change of the mean GSNR over the FGSF window
    "fgsf",  # 1 if the FGSF trigger fired for this layer at this reading
    "flip_rate",  # mask flips per weight per mask update
    "regrow_reprune_share",  # fraction of weights pruned, regrown and pruned again
    "dormant_fraction",  # fraction of τ-dormant units (ReDo)
    "rank_ratio",  # entropy effective rank / its maximum
    "predicted_impact",  # predicted loss change of the reference surgery
)
"""Per-layer sensor features, before the topology embedding (``topo_0 … topo_{k−1}``)."""

GLOBAL_LAYER_FEATURES = (
    "present",
    "density",
    "log_fisher_trace",
    "log_gsnr",
    "coherence",
    "slog_hessian_trace",
    "flip_rate",
    "dormant_fraction",
    "rank_ratio",
    "fgsf",
)
"""The per-layer block of the global state, one block per layer slot (``L03.density``)."""

GLOBAL_FEATURES = (
    "global_density",  # active fraction of all prunable weights
    "log_total_fisher_trace",
    "log_global_gsnr",  # mean GSNR over all active weights
    "global_coherence",
    "loss",  # mean loss of the sensing batch
    "loss_trend",  # relative change of the sensing loss over the FGSF window
    "fgsf_fired",  # 1 if the whole network rigidified at this reading
    "layer_fraction",  # layers / layer slots
)
"""Network-wide features of the global state."""

_FORBIDDEN = ("novelty", "drift")


def observation_names(embedding: int) -> tuple[str, ...]:
    """Feature names of an :class:`Observation` with a ``embedding``-wide topology code."""
    return LAYER_FEATURES + tuple(f"topo_{i}" for i in range(embedding))


def global_state_names(max_layers: int) -> tuple[str, ...]:
    """Feature names of a :class:`GlobalState` with ``max_layers`` layer slots: each slot's
    block, then the mean and max of each block feature over present layers, then the
    network-wide features."""
    slots = tuple(f"L{i:02d}.{f}" for i in range(max_layers) for f in GLOBAL_LAYER_FEATURES)
    pooled = tuple(f"{p}.{f}" for p in ("mean", "max") for f in GLOBAL_LAYER_FEATURES[1:])
    return slots + pooled + GLOBAL_FEATURES


@functools.lru_cache(maxsize=64)
def _check_names(names: tuple[str, ...]) -> None:
    """Refuse duplicate or forbidden feature names (memoised: every observation of a run
    carries the same few name tuples)."""
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if list(names).count(n) > 1})
        raise ValueError(f"duplicate feature names: {', '.join(duplicates)}")
    for name in names:
        if any(word in name.lower() for word in _FORBIDDEN):
            raise ValueError(
                f"feature {name!r} is not allowed: drift novelty is ground truth for analysis "
                "only and must not be observed by the policy"
            )


@dataclass(frozen=True)
class _Named:
    names: tuple[str, ...]
    values: Tensor

    def __post_init__(self) -> None:
        _check_names(tuple(self.names))
        if self.values.shape != (len(self.names),):
            raise ValueError(
                f"{len(self.names)} feature names but values of shape {tuple(self.values.shape)}"
            )

    @property
    def width(self) -> int:
        """Number of features."""
        return len(self.names)

    def to_tensor(self) -> Tensor:
        """The features as a float32 vector, in :attr:`names` order."""
        return self.values

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.values[self.names.index(name)])
        except ValueError:
            raise KeyError(f"no feature {name!r}; features: {', '.join(self.names)}") from None

    def _extended_parts(self, features: Mapping[str, float]) -> tuple[tuple[str, ...], Tensor]:
        extra = torch.tensor([float(v) for v in features.values()], dtype=torch.float32)
        return self.names + tuple(features), torch.cat([self.values, extra])


@dataclass(frozen=True)
class Observation(_Named):
    """One layer's local observation, for its Specialist.

    Attributes:
        layer: The prunable tensor's full parameter name.
        names: Feature names (:func:`observation_names`, then any the organism appended).
        values: Float32 vector of ``len(names)``.
    """

    layer: str = ""

    def extended(self, features: Mapping[str, float]) -> Observation:
        """A copy with ``features`` appended (names must be new and not about drift)."""
        names, values = self._extended_parts(features)
        return Observation(names, values, self.layer)


@dataclass(frozen=True)
class GlobalState(_Named):
    """The network-wide state, for the centralized critic.

    Attributes:
        names: Feature names (:func:`global_state_names`, then any the organism appended).
        values: Float32 vector of ``len(names)``.
    """

    def extended(self, features: Mapping[str, float]) -> GlobalState:
        """A copy with ``features`` appended (names must be new and not about drift)."""
        names, values = self._extended_parts(features)
        return GlobalState(names, values)
