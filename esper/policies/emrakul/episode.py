"""What an Emrakul policy carries through one episode, apart from its networks.

The surgery counter (the General acts every ``M`` surgeries), the General's last logits,
annealing gain and data action, the heat bursts still running per layer, the layers' densities
at reset (the allocation the logits are relative to), the annealing schedule and, under an
elastic budget, the account (:mod:`esper.policies.elastic`). A policy restored mid-stream from
:meth:`EpisodeState.state_dict` acts exactly as the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from esper.policies.anesthesia import HarmonicAnnealing
from esper.policies.elastic import ElasticDensity
from esper.workloads.memory import DataAction

__all__ = ["EpisodeState"]


@dataclass
class EpisodeState:
    """One episode's state (see the module docstring)."""

    surgery: int = 0
    heat_left: dict[str, int] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    gain: float = 1.0
    prior: dict[str, float] = field(default_factory=dict)
    annealing: HarmonicAnnealing | None = None
    elastic: ElasticDensity | None = None
    data: DataAction | None = None

    def state_dict(self) -> dict[str, Any]:
        """Everything but the data action (re-decided at the General's next decision)."""
        return {
            "surgery": self.surgery,
            "heat_left": dict(self.heat_left),
            "logits": None if self.logits is None else self.logits.clone(),
            "gain": self.gain,
            "prior": dict(self.prior),
            "annealing": None if self.annealing is None else self.annealing.state_dict(),
            "elastic": None if self.elastic is None else self.elastic.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], amplitude: float) -> EpisodeState:
        """Restore :meth:`state_dict` output; the annealing schedule's phase is state, its
        ``amplitude`` the restoring policy's."""
        annealing = state["annealing"]
        elastic = state.get("elastic")  # older checkpoints have none
        return cls(
            surgery=int(state["surgery"]),
            heat_left={str(k): int(v) for k, v in state["heat_left"].items()},
            logits=None if state["logits"] is None else state["logits"].clone(),
            gain=float(state["gain"]),
            prior={str(k): float(v) for k, v in state["prior"].items()},
            annealing=None
            if annealing is None
            else HarmonicAnnealing(**{**annealing, "amplitude": amplitude}),
            elastic=None if elastic is None else ElasticDensity.from_state_dict(elastic),
        )
