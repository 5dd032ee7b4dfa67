"""What Emrakul's actors see of an organism's step: its observations, with sensor groups hidden.

Two reasons hide a group (:data:`~esper.policies.emrakul.ablation.SENSOR_GROUPS`):

* **Blindness** (``blind``, and ``hide`` of :func:`actor_inputs`): the group is zeroed in every
  decision, an ablation (which sensors does the policy rely on?) or a policy trained without it.
* **Sensor dropout** (:func:`drop_groups`): while exploring, each group is zeroed for the whole
  decision with a probability, drawn from the policy's own seeded stream. It trains the actors to
  act sensibly when a group is missing or unreliable (as dropout does for features, Srivastava
  et al. 2014), so a policy trained with it degrades gracefully when blinded. It does not by
  itself make a policy *use* a group more: a policy can tolerate a dropped group by ignoring it.
  Making actions depend on the sensors is the auxiliary effect prediction's job (``aux_coef`` of
  the MAPPO learner); :func:`~esper.policies.emrakul.sensitivity.sensor_sensitivity` measures
  either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from esper.policies.emrakul.ablation import SENSOR_GROUPS, blind_columns
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["actor_inputs", "drop_groups"]


def actor_inputs(
    organism: Organism, step: OrganismStep, hidden: Sequence[str] = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer observations ``[n, obs_dim]``, agent ids ``[n]`` and the global state
    ``[state_dim]`` of ``step``, copies with the ``hidden`` groups zeroed (the step's own
    tensors are never written)."""
    names = organism.scalpel.names
    obs = torch.stack([step.observations[n].to_tensor() for n in names]).float()
    state = step.global_state.to_tensor().float().clone()  # the step's own tensor otherwise
    if hidden:
        obs[:, blind_columns(step.observations[names[0]].names, hidden)] = 0.0
        state[blind_columns(step.global_state.names, hidden)] = 0.0
    return obs, torch.arange(len(names)), state


def drop_groups(
    obs: torch.Tensor,
    state: torch.Tensor,
    obs_names: Sequence[str],
    state_names: Sequence[str],
    probability: float,
    generator: torch.Generator,
) -> None:
    """Zero, in place, each sensor group with ``probability`` (one draw per group)."""
    draws = torch.rand(len(SENSOR_GROUPS), generator=generator)
    dropped = [g for g, u in zip(SENSOR_GROUPS, draws.tolist(), strict=True) if u < probability]
    if dropped:
        obs[:, blind_columns(obs_names, dropped)] = 0.0
        state[blind_columns(state_names, dropped)] = 0.0
