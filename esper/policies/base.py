"""The policy interface: every surgeon, heuristic or learned, acts the same way.

A policy looks at the organism after ``K`` SGD steps (its :class:`OrganismStep`: observations,
global state, sensor reading) and returns one :class:`LayerAction` per layer it operates on.
Heuristic baselines differ only in how they score weights for dropping and for growing (as in
rigl's ``MaskUpdater``, where SET and RigL differ only in ``get_grow_scores``); Emrakul's
Specialists choose the mix of those scores, the turnover and the temperature per layer.

Policies decide on the CPU whatever the organism's device (``experiment.device``): their
networks and learners are small (a GPU round trip per surgery would cost more than their forward
pass), per-weight scores and masks are read to the CPU once
(:func:`~esper.policies.scores.weight_scores`), and the :class:`LayerAction` index tensors they
return are CPU tensors, which the organism moves to its device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from esper.registry import Registry, build
from esper.workloads.actions import LayerAction
from esper.workloads.memory import DataAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel import gumbel_topk_blocks, topk_among

__all__ = [
    "POLICIES",
    "Policy",
    "dense_start",
    "make_policy",
    "swap",
]


class Policy(ABC):
    """A surgeon acting on an organism at the surgery timescale.

    Lifecycle: :meth:`reset` once with the organism and its first step, then alternately
    :meth:`act` (choose a surgery) and :meth:`observe` (see its outcome; learning policies
    store the transition). :meth:`state_dict`/:meth:`load_state_dict` checkpoint it.
    """

    name: ClassVar[str]
    prunes_from_dense: ClassVar[bool] = False
    """The policy prunes a dense network down to the budget (GMP): the organism is built dense
    and ``policy.density`` is the density the policy reaches (:func:`dense_start`)."""

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Start an episode on ``organism`` (default: nothing to prepare)."""
        return None

    @abstractmethod
    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """The surgery to apply after ``step``."""

    def data_action(self) -> DataAction | None:
        """The data side's action for the surgery :meth:`act` just chose (default ``None``:
        the organism's buffer keeps its configured refresh and rule)."""
        return None

    def observe(self, organism: Organism, step: OrganismStep) -> None:
        """See the outcome of the last surgery (default: ignore it)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (default: nothing)."""
        return None


POLICIES: Registry[type[Policy]] = Registry("policy")


def make_policy(name: str, **params: Any) -> Policy:
    """Build a registered policy, rejecting unknown parameters by name."""
    return build(POLICIES[name], params, f"policy {name!r}")


def dense_start(
    density: float, name: str, params: Mapping[str, Any]
) -> tuple[float, dict[str, Any]]:
    """The organism's initial density and the policy's parameters for a budget ``density``:
    a policy that prunes from dense (:attr:`Policy.prunes_from_dense`) starts at 1 and gets
    the budget as ``final_density`` (unless its parameters set one); others start at the
    budget with their parameters unchanged."""
    if name in POLICIES and POLICIES[name].prunes_from_dense and density < 1.0:
        return 1.0, {"final_density": density, **params}
    return density, dict(params)


def swap(
    drop_scores: torch.Tensor,
    grow_scores: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    pattern: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The drop-and-grow step shared by SET, RigL and the random baseline.

    Returns the flat indices of the ``k`` active weights with the lowest ``drop_scores`` and of
    the ``k`` inactive weights with the highest ``grow_scores``; ``k`` is clipped to what is
    available, so the layer's density is unchanged. With an N:M ``pattern`` (``(N, M)``, from
    :meth:`Scalpel.block_pattern <esper.workloads.scalpel.Scalpel.block_pattern>`), a block of
    ``M`` takes at most ``N`` kept weights after the swap: regrowth goes where the drop made
    room (each dropped weight frees its block a place, which its block's inactive weights fill).
    """
    flat = mask.reshape(-1)
    n_active = int(flat.count_nonzero())
    k = max(0, min(k, n_active, flat.numel() - n_active))
    drop = topk_among(drop_scores, flat, k, largest=False)
    if pattern is None:
        return drop, topk_among(grow_scores, ~flat, k, largest=True)
    n, m = pattern
    after = flat.clone()
    after[drop] = False
    room = (n - after.view(-1, m).sum(dim=1)).clamp_min(0)
    scores = torch.where(~flat, grow_scores.reshape(-1).float(), torch.tensor(-float("inf")))
    return drop, gumbel_topk_blocks(scores, k, m, room, tau=0.0)
