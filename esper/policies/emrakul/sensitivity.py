"""Whether a policy *uses* a sensor group, measured without running an organism further.

:func:`sensor_sensitivity` zeroes the group (:data:`~esper.policies.emrakul.ablation.SENSOR_GROUPS`)
in one step's inputs and reports how far the greedy outputs move (0 for a group the policy is
blind to). Evaluating a blinded policy answers the same question through the organism's
accuracy, which is slower and noisier: a policy whose greedy outputs barely move with a group
can do little better or worse without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esper.policies.emrakul.ablation import blind_columns
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["SensorSensitivity", "sensor_sensitivity"]


@dataclass(frozen=True)
class SensorSensitivity:
    """How far a policy's greedy outputs move on one step when a sensor group is zeroed.

    Attributes:
        specialist: Mean absolute change of the Specialists' Gaussian action means (turnover,
            criterion mixes, ``log τ`` and sedation logits) over layers and entries.
        general: Mean absolute change of the Surgeon General's greedy density logits over the
            organism's layers (0 for a policy without ``use_general``).
    """

    specialist: float
    general: float


@torch.no_grad()
def sensor_sensitivity(
    policy: EmrakulPolicy, organism: Organism, step: OrganismStep, group: str
) -> SensorSensitivity:
    """How much ``policy``'s deterministic decision on ``step`` depends on sensor ``group``.

    Compares the actors' greedy outputs on what the policy sees of ``step`` with their outputs
    when ``group`` is zeroed too (as ``blind`` would zero it). Nothing of the policy changes:
    no surgery is counted and its sampling stream is not drawn from. A group the policy is
    already blind to gives exactly 0.

    Args:
        policy: A continuous-actor Emrakul policy whose networks exist (reset it on an
            organism first).
        organism: The organism ``step`` comes from.
        step: The step to decide on.
        group: A key of :data:`SENSOR_GROUPS`.

    Raises:
        KeyError: an unknown group (the message lists the valid ones).
        ValueError: a discrete (QMIX) policy, which has no action means.
        RuntimeError: a policy without networks.
    """
    blind_columns([], [group])  # an unknown group is refused here
    if policy.discrete:
        raise ValueError("sensor_sensitivity reads the continuous actor; this policy is discrete")
    specialist, general = policy.specialist, policy.general
    if specialist is None or general is None:
        raise RuntimeError("the policy has no networks yet: reset it on an organism first")
    obs, ids, state = policy.inputs(organism, step)
    obs_hidden, _, state_hidden = policy.inputs(organism, step, hide=(group,))
    moved = specialist.distribution(obs_hidden, ids).mean - specialist.distribution(obs, ids).mean
    general_moved = 0.0
    if policy.use_general:
        n = len(ids)
        seen = general.distribution(state.unsqueeze(0)).mean[0, :n]
        unseen = general.distribution(state_hidden.unsqueeze(0)).mean[0, :n]
        general_moved = float((unseen - seen).abs().mean())
    return SensorSensitivity(float(moved.abs().mean()), general_moved)
