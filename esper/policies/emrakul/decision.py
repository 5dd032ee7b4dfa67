"""One Emrakul decision as the learners keep it, and what a discrete learner must offer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from esper.policies.emrakul.actions import SpecialistAction

__all__ = ["Decision", "DiscreteAgent"]


class DiscreteAgent(Protocol):
    """What a discrete learner (QMIX) offers the policy."""

    def act(self, obs: torch.Tensor, agent_ids: torch.Tensor, explore: bool) -> torch.Tensor:
        """Action indices ``[n]`` for observations ``[n, d]``."""
        ...


@dataclass
class Decision:
    """One surgery's decision, as the learners need it.

    Attributes:
        layers: Layer names, in agent order.
        obs: ``[n, obs_dim]`` Specialist observations.
        ids: ``[n]`` agent (layer slot) indices.
        state: ``[state_dim]`` global state.
        raw: ``[n, codec.width]`` raw Specialist actions (``[n]`` indices if discrete).
        log_prob: ``[n]`` log-probabilities of ``raw`` (zeros if discrete).
        actions: The decoded Specialist actions, by layer.
        general_raw: The raw General action (``[general.action_dim]``) if it acted now.
        general_log_prob: Its log-probability.
        targets: Kept-weight counts per layer (``None``: densities unchanged).
    """

    layers: list[str]
    obs: torch.Tensor
    ids: torch.Tensor
    state: torch.Tensor
    raw: torch.Tensor
    log_prob: torch.Tensor
    actions: dict[str, SpecialistAction]
    general_raw: torch.Tensor | None
    general_log_prob: torch.Tensor | None
    targets: dict[str, int] | None
