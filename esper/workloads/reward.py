"""The reward of one surgery: five raw terms and their weighted sum.

``R = α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike`` (weights: :class:`esper.config.RewardConfig`,
the ``reward`` config group). The organism measures the terms after every surgery
(:func:`score_surgery`); policies are trained on the weighted sum, while population search
compares members by online accuracy alone (members with other weights have rewards of other
scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from esper.config import RewardConfig
from esper.workloads.sensors import Reading

__all__ = ["DIVERGED_REWARD", "RewardComponents", "score_surgery"]

DIVERGED_REWARD = -1.0
"""Team reward of a surgery after which the host diverged (NaN/Inf loss), used by the trainer
in place of the (undefined) weighted sum. Every term of a live organism's reward is bounded
(the spike is squashed into ``[0, 1)``), so with the default weights it lies below anything a
live organism earns (at worst ``−β − γ − ε = −0.3``)."""


@dataclass(frozen=True)
class RewardComponents:
    """The five raw reward terms of one surgery step.

    Attributes:
        accuracy: Online accuracy over the ``K`` steps after the surgery
            (:func:`esper.measures.online_accuracy`: for regression ``1 / (1 + MSE)``).
        flops: Sparse ÷ dense forward FLOPs after the surgery.
        oscillation: Parameter-weighted reversal rate: the fraction of weights whose mask
            change at this surgery undid a change made within the flip-flop window
            (:attr:`FlipFlopStats.reversal_rate
            <esper.workloads.sensors.flipflop.FlipFlopStats.reversal_rate>`). Ordinary
            turnover, pruning some weights and regrowing others, is not penalised.
        gsnr: Mean layer GSNR ``g``, squashed as ``g / (1 + g)``.
        spike: The damage the surgery itself does: the relative rise of the loss of the
            operated network over the unoperated one on the same next ``spike_window``
            batches, before any training, ``s = max(0, (operated − control) / control)``,
            squashed as ``s / (1 + s)`` into ``[0, 1)``. Both see the same data, so a drift
            arriving with the surgery is not charged to it (a no-surgery control; measuring
            online losses before and after, as before, charged every drift to the surgeon
            that happened to operate at it). Unsquashed, a near-zero control loss (a task
            fitted almost perfectly) turned a harmless surgery into a rise of ×15 that
            outweighed every other term (``benchmarks/credit.py`` found one whose own effect
            on accuracy was −0.004); squashed, a doubling of the loss costs half the term.
    """

    accuracy: float
    flops: float
    oscillation: float
    gsnr: float
    spike: float

    def weighted(self, w: RewardConfig) -> float:
        """``α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike``."""
        return (
            w.alpha * self.accuracy
            - w.beta * self.flops
            - w.gamma * self.oscillation
            + w.delta * self.gsnr
            - w.epsilon * self.spike
        )


def score_surgery(
    reading: Reading,
    accuracy: float,
    flops_ratio: float,
    sizes: dict[str, int],
    loss_before: float,
    loss_after: float,
) -> RewardComponents:
    """The raw terms of one surgery.

    Args:
        reading: The sensor reading after the surgery's ``K`` steps.
        accuracy: Online accuracy over those steps.
        flops_ratio: Sparse ÷ dense forward FLOPs after the surgery.
        sizes: Weights per prunable tensor (weights of the oscillation average).
        loss_before: Loss of the unoperated network on the probe batches (the control).
        loss_after: Loss of the operated network on the same batches.
    """
    total = sum(sizes.values())
    flips = reading.flipflop
    oscillation = sum(flips[n].reversal_rate * sizes[n] for n in flips) / total
    g = reading.gradients.gsnr_mean
    return RewardComponents(
        accuracy=accuracy,
        flops=flops_ratio,
        oscillation=float(oscillation),
        gsnr=float(g / (1.0 + g)) if math.isfinite(g) else 0.0,
        spike=_spike(loss_before, loss_after),
    )


def _spike(loss_before: float, loss_after: float) -> float:
    """``s / (1 + s)`` of ``s = max(0, (after − before) / before)``, ``nan`` when either loss is
    not finite (a diverged host has no spike to speak of, and ``max(0, nan)`` would hide it as
    0)."""
    if not (math.isfinite(loss_before) and math.isfinite(loss_after)):
        return math.nan
    rise = max(0.0, (loss_after - loss_before) / max(abs(loss_before), 1e-12))
    return rise / (1.0 + rise)
