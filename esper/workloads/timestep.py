"""What a step of the organism returns, and a surgery between the two halves of a step.

:class:`OrganismStep` is the environment's step result (observations, global state, reward,
events). :class:`Surgery` is what :meth:`Organism.begin <esper.workloads.organism.Organism.begin>`
hands to :meth:`Organism.finish <esper.workloads.organism.Organism.finish>`, so that a
:class:`~esper.workloads.cohort.Cohort` can train many organisms together in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esper.events import SurgicalEvent
from esper.workloads.reward import RewardComponents
from esper.workloads.sensors import Reading
from esper.workloads.sensors.state import GlobalState, Observation

__all__ = ["OrganismStep", "Surgery"]


@dataclass(frozen=True)
class Surgery:
    """A surgery applied by :meth:`Organism.begin`, awaiting its training and scoring.

    Attributes:
        before: The reading the surgery was decided on.
        loss_before: Online loss of the last ``spike_window`` steps before it.
        events: Its events (reward fields filled by :meth:`Organism.finish`).
        touched: Per layer acted on, the fractions pruned and regrown.
        changed: Per layer acted on, how many weights changed mask state (the impact
            predictor's credit shares).
        control_loss: Loss of the network before the surgery on the next ``spike_window``
            batches (the no-surgery control of the spike term).
        operated_loss: Loss of the operated network on the same batches, before any training
            (``None`` while its caller has still to measure it: a cohort's members).
    """

    before: Reading
    loss_before: float
    events: list[SurgicalEvent]
    touched: dict[str, dict[str, float]]
    changed: dict[str, int] = field(default_factory=dict)
    control_loss: float = float("nan")
    operated_loss: float | None = float("nan")


@dataclass(frozen=True)
class OrganismStep:
    """What :meth:`Organism.reset` and :meth:`Organism.step` return.

    Attributes:
        observations: Local observation per layer (Specialists see only their layer's).
        global_state: The centralized critic's state.
        reward: Weighted reward of the step (0 after ``reset``).
        components: The raw reward terms (``None`` after ``reset``).
        events: Surgical events of the step, reward fields filled in.
        reading: The full sensor reading behind the observations.
        info: Diagnostics: ``sgd_step``, ``surgery_step``, ``task_index``, ``online_accuracy``
            (mean over the steps since the last surgery), ``accuracies`` (each of those steps'),
            ``online_loss``, ``density``, ``densities``, ``novelty`` (ground truth, for analysis
            only — never an observation), ``fgsf``, ``diverged``.
    """

    observations: dict[str, Observation]
    global_state: GlobalState
    reward: float
    components: RewardComponents | None
    events: list[SurgicalEvent]
    reading: Reading
    info: dict[str, Any] = field(default_factory=dict)
