"""Per-weight scores a policy can rank by, read off the organism after its ``K`` steps.

``magnitude`` |w| and ``gradient`` |∂L/∂w| (dense, pruned positions included: RigL's grow
criterion, Evci et al. 2020) come from the Scalpel; ``fisher`` (empirical Fisher diagonal) and
``gsnr`` (per-weight gradient signal-to-noise ratio, Liu et al. 2020) from the last sensor
reading; ``age`` is surgeries since the weight's mask state last changed; ``random`` is a
seeded uniform draw (SET's grow criterion, Mocanu et al. 2018).

Policies decide on the CPU: every score is returned as a CPU tensor, whatever the organism's
device (one copy per criterion and layer), and ``random`` draws from the policy's CPU generator.
"""

from __future__ import annotations

import torch

from esper.workloads.organism import Organism, OrganismStep

__all__ = ["SCORE_NAMES", "weight_scores"]

SCORE_NAMES = ("magnitude", "gradient", "fisher", "gsnr", "age", "random")


def weight_scores(
    organism: Organism,
    step: OrganismStep,
    name: str,
    generator: torch.Generator,
    which: tuple[str, ...] = SCORE_NAMES,
) -> dict[str, torch.Tensor]:
    """Flat per-weight scores of layer ``name``, one CPU tensor per requested criterion.

    Raises:
        KeyError: an unknown criterion (the message lists the valid ones).
    """
    unknown = [w for w in which if w not in SCORE_NAMES]
    if unknown:
        raise KeyError(f"unknown weight scores {unknown}; valid: {', '.join(SCORE_NAMES)}")
    weight = dict(organism.host.named_parameters())[name].detach().reshape(-1)
    out: dict[str, torch.Tensor] = {}
    stats = step.reading.gradients.layers[name]
    for key in which:
        if key == "magnitude":
            score = weight.abs()
        elif key == "gradient":
            score = organism.scalpel.dense_grad(name).detach().reshape(-1).abs()
        elif key == "fisher":
            score = stats.fisher.reshape(-1)
        elif key == "gsnr":
            score = stats.gsnr.reshape(-1)
        elif key == "age":
            score = organism.age(name).to(weight.dtype)
        else:
            score = torch.rand(weight.numel(), generator=generator)
        out[key] = score.cpu()
    return out
