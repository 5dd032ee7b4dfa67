"""The dense baseline: never operates."""

from __future__ import annotations

from typing import ClassVar

from esper.policies.base import POLICIES, Policy
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["Dense"]


@POLICIES.register("dense")
class Dense(Policy):
    """Never prunes nor regrows: the organism keeps the support it was built with (all weights
    when built at ``policy.density=1``)."""

    name: ClassVar[str] = "dense"

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """No surgery."""
        return {}
