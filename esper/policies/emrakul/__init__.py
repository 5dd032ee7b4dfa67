"""Emrakul: the hierarchical immune system (Surgeon General + Specialists), registered as
the ``emrakul`` policy."""

from esper.policies.emrakul.actions import (
    DISCRETE_ACTIONS,
    N_DISCRETE_ACTIONS,
    PRUNE_CRITERIA,
    REGROW_CRITERIA,
    SpecialistAction,
    decode_discrete,
    layer_action,
)
from esper.policies.emrakul.general import SurgeonGeneral, allocate_counts
from esper.policies.emrakul.policy import Decision, EmrakulPolicy
from esper.policies.emrakul.specialist import ActionCodec, SpecialistActor

__all__ = [
    "DISCRETE_ACTIONS",
    "N_DISCRETE_ACTIONS",
    "PRUNE_CRITERIA",
    "REGROW_CRITERIA",
    "ActionCodec",
    "Decision",
    "EmrakulPolicy",
    "SpecialistAction",
    "SpecialistActor",
    "SurgeonGeneral",
    "allocate_counts",
    "decode_discrete",
    "layer_action",
]
