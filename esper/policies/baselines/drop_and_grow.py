"""The drop-and-grow surgeon shared by SET, RigL and the random baseline.

At every update (:class:`~esper.policies.baselines.schedules.UpdateClock`) and in every layer,
the ``k = ⌊f(t) · n_active⌋`` active weights with the lowest drop score are pruned and the ``k``
inactive weights with the highest grow score regrown (:func:`esper.policies.base.swap`), so each
layer's density is held exactly. ``f`` is a
:class:`~esper.policies.baselines.schedules.DropFraction`; the scores are
:mod:`~esper.policies.baselines.hooks`. Regrowth draws only among weights inactive *before* the
drop, so a weight pruned at an update is never regrown by the same update (``rigl-torch`` and
``google-research/rigl`` may regrow it: see ``tests/policies/baselines/test_rigl_peer.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from esper.policies.base import Policy, swap
from esper.policies.baselines.hooks import ScoreHook
from esper.policies.baselines.schedules import DropFraction, UpdateClock
from esper.seeding import derive_seed
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel import REGROW_INITS

__all__ = ["DropAndGrow"]


def _check_init(regrow_init: str) -> str:
    if regrow_init not in REGROW_INITS:
        raise ValueError(
            f"regrow_init={regrow_init!r} is unknown; valid: {', '.join(REGROW_INITS.names())}"
        )
    return regrow_init


class DropAndGrow(Policy):
    """Magnitude-style drop and score-based regrowth at a fixed density per layer.

    Args:
        drop_fraction: ``f(t)``, the fraction of active weights swapped at SGD step ``t``.
        clock: When updates happen (every ``ΔT`` SGD steps until ``T_end``).
        drop: Drop-score hook (lowest active pruned).
        grow: Grow-score hook (highest inactive regrown).
        regrow_init: How regrown weights start (a name in ``REGROW_INITS``; RigL: ``zero``).
        seed: Seed of the policy's random stream (random scores).
    """

    name: ClassVar[str] = "drop_and_grow"  # not registered: subclasses name themselves

    def __init__(
        self,
        drop_fraction: DropFraction,
        clock: UpdateClock,
        drop: ScoreHook,
        grow: ScoreHook,
        regrow_init: str,
        seed: int,
    ) -> None:
        self.drop_fraction = drop_fraction
        self.clock = clock
        self.drop = drop
        self.grow = grow
        self.regrow_init = _check_init(regrow_init)
        self.seed = seed
        self.generator = torch.Generator()
        self.generator.manual_seed(derive_seed(seed, "policy", self.name))

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Reseed the random stream and restart the update clock (updates at multiples of ΔT)."""
        self.generator.manual_seed(derive_seed(self.seed, "policy", self.name))
        self.clock.reset()

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Swap ``⌊f(t)·n_active⌋`` weights per layer when an update is due, else nothing."""
        t = organism.sgd_step
        if not self.clock.due(t):
            return {}
        fraction = self.drop_fraction(t)
        actions: dict[str, LayerAction] = {}
        for name in organism.scalpel.names:
            mask = organism.scalpel.mask(name).cpu()  # scores and indices live on the CPU
            k = int(int(mask.count_nonzero()) * fraction)
            if k == 0:
                continue
            drop_scores = self.drop(organism, step, name, self.generator)
            grow_scores = self.grow(organism, step, name, self.generator)
            pattern = organism.scalpel.block_pattern(name)
            prune, regrow = swap(drop_scores, grow_scores, mask, k, pattern)
            if prune.numel():
                actions[name] = LayerAction(
                    prune=prune, regrow=regrow, regrow_init=self.regrow_init
                )
        return actions

    def state_dict(self) -> dict[str, Any]:
        """The update clock and the random stream."""
        return {"clock": self.clock.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.clock.load_state_dict(state["clock"])
        self.generator.set_state(state["generator"])
