"""Applying a surgery's actions to a patient, layer by layer, and recording each as an event.

The :class:`Patient` names the parts of an organism that a surgery touches, so this module needs
no organism: :meth:`Organism.begin <esper.workloads.organism.Organism.begin>` validates every
action, then calls :func:`operate` on its parts, so a bad action changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from esper.events import SurgicalEvent
from esper.workloads.actions import LayerAction, cut
from esper.workloads.anesthesia import Sedation
from esper.workloads.forgetting import shrink_perturb
from esper.workloads.hosts import Host
from esper.workloads.mask_age import MaskAge
from esper.workloads.scalpel import Scalpel
from esper.workloads.surgical_events import EventBuilder, EventContext
from esper.workloads.units import reset_units

__all__ = ["Patient", "operate"]


@dataclass(frozen=True)
class Patient:
    """What a surgery operates on: an organism's parts, shared with it (not copies).

    Attributes:
        host: The host network (units re-initialised, weights shrunk and perturbed).
        scalpel: Its masks (pruned, regrown, temperatures set).
        optimizer: The host's optimizer (state of re-initialised weights cleared).
        generator: The organism's own random stream (re-initialisation, perturbation).
        events: Makes the surgery's event records.
        mask_age: When each weight's mask state last changed.
        sedation: Per-layer learning-rate damping after surgery.
    """

    host: Host
    scalpel: Scalpel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    events: EventBuilder
    mask_age: MaskAge
    sedation: Sedation


def operate(
    patient: Patient, actions: Mapping[str, LayerAction], ctx: EventContext
) -> tuple[list[SurgicalEvent], dict[str, dict[str, float]], dict[str, int]]:
    """Apply a surgery's actions to ``patient`` at moment ``ctx`` (whose ``surgery_step`` dates the
    mask changes); returns its events, each layer's prune/regrow fractions and how many of its
    weights changed mask state."""
    events: list[SurgicalEvent] = []
    touched: dict[str, dict[str, float]] = {}
    changed: dict[str, int] = {}
    for name, act in actions.items():
        first = len(events)
        density_before = patient.scalpel.density(name)
        active = max(1, int(patient.scalpel.mask(name).sum()))
        pruned, regrown = _cut(patient, name, act, ctx.surgery_step)
        if pruned.numel():
            events.append(patient.events.event(ctx, name, "prune", pruned, density_before))
        if regrown.numel():
            events.append(patient.events.event(ctx, name, "regrow", regrown, density_before))
        if (target := act.target_density) is not None:
            events.append(patient.events.event(ctx, name, "budget", None, density_before, target))
        units = torch.as_tensor(act.reset_units, dtype=torch.int64).view(-1)
        if units.numel():
            count = reset_units(
                patient.host, patient.scalpel, patient.optimizer, name, units, patient.generator
            )
            events.append(patient.events.event(ctx, name, "reset", units, value=float(count)))
        if (forget := torch.as_tensor(act.forget, dtype=torch.int64).view(-1)).numel():
            count = shrink_perturb(
                patient.host,
                patient.optimizer,
                name,
                forget,
                patient.generator,
                shrink=act.forget_shrink,
                perturb=act.forget_perturb,
            )
            events.append(patient.events.event(ctx, name, "forget", forget, value=float(count)))
        if act.tau is not None:
            patient.scalpel.set_temperature(name, act.tau)
            events.append(patient.events.event(ctx, name, "temperature", value=act.tau))
        if act.tau_factor is not None and patient.scalpel.heat_temperature(name, act.tau_factor):
            tau = patient.scalpel.temperature(name)
            events.append(patient.events.event(ctx, name, "temperature", value=tau))
        if act.sedation_steps > 0 and act.sedation != 1.0:
            patient.sedation.sedate(name, act.sedation, act.sedation_steps)
            events.append(patient.events.event(ctx, name, "sedate", value=act.sedation))
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


def _cut(
    patient: Patient, name: str, act: LayerAction, surgery_step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune, then regrow; returns the flat indices that actually changed state."""
    pruned, regrown = cut(patient.scalpel, name, act)
    patient.mask_age.touch(name, pruned, surgery_step)
    patient.mask_age.touch(name, regrown, surgery_step)
    return pruned, regrown
