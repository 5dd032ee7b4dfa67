"""Run a policy on an organism for a whole stream and report what it achieved.

The report holds what a researcher compares policies by: online (prequential) accuracy, the
density held (globally and per layer, counting every masked tensor), forward FLOPs relative to
the dense network, the mask oscillation rate and the mean of each reward component.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from esper.events.record import SurgicalEvent
from esper.policies.base import Policy
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["EvaluationReport", "evaluate_policy"]


@dataclass
class EvaluationReport:
    """What one policy achieved on one organism.

    Attributes:
        policy: Policy name.
        surgeries: Surgeries performed.
        sgd_steps: Prequential SGD steps taken.
        online_accuracy: Mean online accuracy over every step after the first reading.
        final_accuracy: Mean online accuracy over the last surgery interval.
        density: Global density at the end (parameter-weighted over masked tensors).
        densities: Final density per layer.
        flops: Final sparse ÷ dense forward FLOPs.
        mean_flops: Sparse ÷ dense forward FLOPs averaged over every SGD step (what an elastic
            budget holds; equal to ``flops`` under a fixed one).
        oscillation: Mean flip-flop rate over surgeries.
        reward: Mean weighted reward.
        components: Mean of each raw reward component.
        accuracy_by_task: Mean online accuracy per task index.
        events: Number of surgical events.
        diverged: Whether the host diverged (the run stops there).
    """

    policy: str
    surgeries: int
    sgd_steps: int
    online_accuracy: float
    final_accuracy: float
    density: float
    densities: dict[str, float]
    flops: float
    oscillation: float
    reward: float
    components: dict[str, float]
    accuracy_by_task: dict[int, float] = field(default_factory=dict)
    events: int = 0
    diverged: bool = False
    mean_flops: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (task keys as strings)."""
        data = asdict(self)
        data["accuracy_by_task"] = {str(k): v for k, v in self.accuracy_by_task.items()}
        return data


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def evaluate_policy(
    organism: Organism,
    policy: Policy,
    surgeries: int,
    on_step: Callable[[int, OrganismStep], None] | None = None,
    on_events: Callable[[list[SurgicalEvent]], None] | None = None,
) -> EvaluationReport:
    """Roll ``policy`` out on ``organism`` for ``surgeries`` surgeries.

    Args:
        organism: A freshly built organism (``reset`` is called here).
        policy: The surgeon.
        surgeries: How many surgeries (each followed by ``K`` SGD steps).
        on_step: Called with the first reading (index −1) and after each surgery with its
            index and result (progress output, metrics recording).
        on_events: Called with each step's surgical events (an event-log writer).
    """
    step = organism.reset()
    policy.reset(organism, step)
    accuracy: list[float] = []
    by_task: dict[int, list[float]] = {}
    rewards: list[float] = []
    components: dict[str, list[float]] = {}
    n_events = 0
    shape = organism.stream.source.input_shape
    flop_steps = organism.scalpel.flops(shape).ratio * organism.sgd_step
    if on_events is not None and step.events:
        on_events(step.events)
    if on_step is not None:
        on_step(-1, step)
    for i in range(surgeries):
        before = organism.sgd_step
        step = organism.step(policy.act(organism, step), data=policy.data_action())
        assert step.components is not None
        flop_steps += step.components.flops * (organism.sgd_step - before)
        policy.observe(organism, step)
        n_events += len(step.events)
        if on_events is not None and step.events:
            on_events(step.events)
        accuracy.append(step.info["online_accuracy"])
        by_task.setdefault(step.info["task_index"], []).append(step.info["online_accuracy"])
        rewards.append(step.reward)
        for key, value in asdict(step.components).items():
            components.setdefault(key, []).append(value)
        if on_step is not None:
            on_step(i, step)
        if step.info["diverged"]:
            break
    return EvaluationReport(
        policy=policy.name,
        surgeries=len(rewards),
        sgd_steps=organism.sgd_step,
        online_accuracy=_mean(accuracy),
        final_accuracy=accuracy[-1] if accuracy else float("nan"),
        density=organism.scalpel.global_density(),
        densities=organism.scalpel.densities(),
        flops=organism.scalpel.flops(shape).ratio,
        oscillation=_mean(components.get("oscillation", [])),
        reward=_mean(rewards),
        components={k: _mean(v) for k, v in components.items()},
        accuracy_by_task={k: _mean(v) for k, v in sorted(by_task.items())},
        events=n_events,
        diverged=bool(step.info["diverged"]),
        mean_flops=flop_steps / organism.sgd_step if organism.sgd_step else float("nan"),
    )
