"""Periodic resets (Nikishin et al., ICML 2022, "The Primacy Bias in Deep Reinforcement
Learning", arXiv 2205.07802): re-initialise the network's last layers at a fixed period, so
that what the agent over-fitted early does not outlive it; the replay buffer (the stream's) is
kept, which is what lets the agent recover quickly.

Every ``interval`` SGD steps the last ``layers`` prunable layers get fresh weights on their
active support (``regrow_init``, Kaiming by default, with their optimizer state reset, as the
Scalpel does for regrown weights); masks do not change, so on a dense organism it is the
paper's reset and on a sparse one the same reset of the kept connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines.schedules import UpdateClock
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel.regrowth import REGROW_INITS

__all__ = ["PeriodicReset"]


@POLICIES.register("periodic_reset")
class PeriodicReset(Policy):
    """Re-initialise the last ``layers`` layers every ``interval`` SGD steps.

    Args:
        interval: SGD steps between resets, ≥ 1 (the paper resets every 2·10⁴ to 10⁵ updates
            on Atari and DMC; scale it to the stream).
        layers: How many of the last prunable layers to reset, ≥ 1.
        init: Initialisation of the fresh weights (a name in ``REGROW_INITS``).
    """

    name: ClassVar[str] = "periodic_reset"

    def __init__(self, interval: int = 2000, layers: int = 1, init: str = "kaiming") -> None:
        if layers < 1:
            raise ValueError(f"layers={layers} must be ≥ 1")
        if init not in REGROW_INITS:
            raise ValueError(f"init={init!r} is unknown; valid: {', '.join(REGROW_INITS.names())}")
        self.clock = UpdateClock(interval)
        self.layers = layers
        self.init = init
        self.resets = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Start the clock."""
        self.clock.reset()

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """When due, fresh weights for the last layers' active connections."""
        if not self.clock.due(organism.sgd_step):
            return {}
        self.resets += 1
        actions = {}
        for name in organism.scalpel.names[-self.layers :]:
            active = organism.scalpel.mask(name).view(-1).nonzero().view(-1)
            actions[name] = LayerAction(prune=active, regrow=active, regrow_init=self.init)
        return actions

    def state_dict(self) -> dict[str, Any]:
        """The clock and the number of resets so far."""
        return {"clock": self.clock.state_dict(), "resets": self.resets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.clock.load_state_dict(state["clock"])
        self.resets = int(state["resets"])
