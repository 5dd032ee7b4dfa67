"""Applying a surgery's actions to an organism, layer by layer, and recording each as an event.

:meth:`Organism.begin <esper.workloads.organism.Organism.begin>` validates every action before
calling :func:`operate`, so a bad action changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from esper.events import SurgicalEvent
from esper.workloads.actions import LayerAction, cut
from esper.workloads.forgetting import shrink_perturb
from esper.workloads.surgical_events import EventContext
from esper.workloads.units import reset_units

if TYPE_CHECKING:
    from esper.workloads.organism import Organism

__all__ = ["operate"]


def operate(
    org: Organism, actions: Mapping[str, LayerAction], ctx: EventContext
) -> tuple[list[SurgicalEvent], dict[str, dict[str, float]], dict[str, int]]:
    """Apply a surgery's actions to ``org`` at moment ``ctx``; returns its events, each layer's
    prune/regrow fractions and how many of its weights changed mask state."""
    events: list[SurgicalEvent] = []
    touched: dict[str, dict[str, float]] = {}
    changed: dict[str, int] = {}
    for name, act in actions.items():
        first = len(events)
        density_before = org.scalpel.density(name)
        active = max(1, int(org.scalpel.mask(name).sum()))
        pruned, regrown = _cut(org, name, act)
        if pruned.numel():
            events.append(org.events.event(ctx, name, "prune", pruned, density_before))
        if regrown.numel():
            events.append(org.events.event(ctx, name, "regrow", regrown, density_before))
        if (target := act.target_density) is not None:
            events.append(org.events.event(ctx, name, "budget", None, density_before, target))
        units = torch.as_tensor(act.reset_units, dtype=torch.int64).view(-1)
        if units.numel():
            count = reset_units(org.host, org.scalpel, org.optimizer, name, units, org.generator)
            events.append(org.events.event(ctx, name, "reset", units, value=float(count)))
        if (forget := torch.as_tensor(act.forget, dtype=torch.int64).view(-1)).numel():
            count = shrink_perturb(
                org.host,
                org.optimizer,
                name,
                forget,
                org.generator,
                shrink=act.forget_shrink,
                perturb=act.forget_perturb,
            )
            events.append(org.events.event(ctx, name, "forget", forget, value=float(count)))
        if act.tau is not None:
            org.scalpel.set_temperature(name, act.tau)
            events.append(org.events.event(ctx, name, "temperature", value=act.tau))
        if act.sedation_steps > 0 and act.sedation != 1.0:
            org.sedation.sedate(name, act.sedation, act.sedation_steps)
            events.append(org.events.event(ctx, name, "sedate", value=act.sedation))
        for event in events[first:]:  # the surgeon's decision, on every row of its layer
            if act.policy_tau is not None:
                event.policy_tau = float(act.policy_tau)
            event.heat = act.heat
        touched[name] = {
            "prune_fraction": pruned.numel() / active,
            "regrow_fraction": regrown.numel() / active,
        }
        changed[name] = pruned.numel() + regrown.numel()
    return events, touched, changed


def _cut(org: Organism, name: str, act: LayerAction) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune, then regrow; returns the flat indices that actually changed state."""
    pruned, regrown = cut(org.scalpel, name, act)
    org.mask_age.touch(name, pruned, org.surgery_step)
    org.mask_age.touch(name, regrown, org.surgery_step)
    return pruned, regrown
