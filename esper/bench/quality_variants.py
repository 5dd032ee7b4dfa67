"""The Emrakul variants of ``esper bench quality``: ablations, retrained variants and the switches
set on a loaded checkpoint.

A variant either needs a training run of its own (:data:`TRAINED_ABLATIONS`, with the config
overrides of that run) or reuses the full policy's checkpoint with attributes switched
(:data:`SWITCHES`); :data:`EVERY_DENSITY` names those compared at every density of a preset.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ABLATIONS", "EVERY_DENSITY", "SWITCHES", "TRAINED_ABLATIONS", "WARM_START_ABLATIONS",
]  # fmt: skip


WARM_START_ABLATIONS = ("imitation_only", "no_imitation")
"""Ablations of the warm start (a preset with ``imitation=0`` has none to ablate)."""


ABLATIONS = {
    "no_general": "trained and evaluated without the Surgeon General (layer densities stay ERK)",
    "no_imitation": "trained by RL alone, without the RigL-imitation warm start",
    "imitation_only": "the behaviour-cloned RigL imitation before any RL update",
    "general_rigl": "the trained policy with its Specialists replaced by RigL's rule (the "
    "General still allocates)",
    "blind_gradient": "the trained policy evaluated blind to the gradient sensors (Fisher, "
    "GSNR, coherence, FGSF)",
    "blind_topology": "the trained policy evaluated blind to the topology sensors (structure, "
    "GNN embedding, predicted impact)",
    "retrained_blind_gradient": "trained from scratch, same budget, never seeing the gradient "
    "sensors, and evaluated blind to them",
    "retrained_blind_topology": "trained from scratch, same budget, never seeing the topology "
    "sensors, and evaluated blind to them",
    "elastic": "trained and evaluated with an elastic budget: the General also chooses the global "
    "density in [budget / 2, 2 · budget], held to the budget's mean FLOPs over the run",
}
"""Emrakul variants an ablation can name, and what each removes. Those of
:data:`TRAINED_ABLATIONS` are trained on their own; the others use the full policy's
checkpoint (``imitation_only`` its snapshot before RL)."""

TRAINED_ABLATIONS: dict[str, tuple[str, ...]] = {
    "no_general": ("policy.params.use_general=false",),
    "no_imitation": ("policy.training.imitation=0",),
    "retrained_blind_gradient": ("policy.params.blind=[gradient]",),
    "retrained_blind_topology": ("policy.params.blind=[topology]",),
    "elastic": ("policy.params.elastic=true",),
}
"""Ablations that need a training run of their own, and the config overrides of that run
(applied after the preset's training settings)."""

EVERY_DENSITY = ("elastic",)
"""Variants evaluated at every density of the preset (the others at the first only): an elastic
budget is compared with RigL at each mean FLOPs budget."""

SWITCHES: dict[str, tuple[tuple[str, Any], ...]] = {
    "general_rigl": (("specialists", False),),
    "blind_gradient": (("blind", ("gradient",)),),
    "blind_topology": (("blind", ("topology",)),),
    "retrained_blind_gradient": (("blind", ("gradient",)),),
    "retrained_blind_topology": (("blind", ("topology",)),),
}
"""Policy attributes an ablation sets on its loaded checkpoint, in selection and evaluation
alike (a retrained-blind checkpoint is blind already; the switch says so where it is read)."""
