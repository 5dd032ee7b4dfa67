"""Decision-critical states of an agent: where the contact-aware Fisher looks.

The plain empirical Fisher averages squared per-sample gradients over every state of a batch.
Most states an agent visits are easy: any reasonable action does. The contact-aware Fisher
averages over the states where the decision is at stake instead, so that the weights it ranks
as important are those the agent's choices hinge on. For a Q-network these are the states with
the smallest gap between the best and the second-best action value (the agent is about to
change its mind there), and the states whose transition ended the episode (a fall, a goal):
the specification's "contact" states. Give :func:`decision_critical` to the sensors as their
boundary rule (:class:`~esper.workloads.sensors.NervousSystem`'s ``boundary_fn``): the
contact-aware Fisher, a Specialist observation, is then taken over these states. With every
state critical (``quantile = 1``) it is the plain Fisher.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["action_gaps", "decision_critical"]


def action_gaps(q_values: Tensor) -> Tensor:
    """Best minus second-best action value per state, ``[B]`` (``≥ 0``)."""
    if q_values.dim() != 2 or q_values.shape[1] < 2:
        raise ValueError(f"action gaps need [B, actions ≥ 2] values, got {tuple(q_values.shape)}")
    top = torch.topk(q_values, 2, dim=1).values
    return top[:, 0] - top[:, 1]


def decision_critical(q_values: Tensor, targets: Tensor, losses: Tensor, quantile: float) -> Tensor:
    """Sorted indices of the ``⌈quantile·B⌉`` most decision-critical states of a batch.

    Terminal transitions come first (the third column of an agent's targets,
    :class:`~esper.workloads.rl.agent.AgentStream`, is 1 for them), then the states with the
    smallest action gap (:func:`action_gaps`); ties keep batch order.

    Args:
        q_values: The Q-network's outputs ``[B, actions]``.
        targets: The batch's ``(action, TD target, done)`` rows ``[B, 3]`` (or without
            ``done``: then the gaps alone decide).
        losses: Per-sample losses (unused; the signature of a boundary rule).
        quantile: Fraction of the batch, in ``(0, 1]``.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"boundary quantile must be in (0, 1], got {quantile}")
    k = max(1, math.ceil(quantile * q_values.shape[0]))
    score = action_gaps(q_values)
    if targets.dim() == 2 and targets.shape[1] >= 3:
        score = torch.where(targets[:, 2] > 0.5, torch.full_like(score, -1.0), score)
    order = torch.sort(score, stable=True).indices
    return order[:k].sort().values
