"""Prequential (test-then-train) learning on a stream, and per-task summaries.

On a drifting stream the honest measure is *online* accuracy: each batch is first scored by the
current network and only then trained on (Gama et al. 2013, "On evaluating stream learning
algorithms"). One forward pass serves both: the predictions are recorded before the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esper.workloads.stream import Batch

__all__ = ["StepRecord", "TaskSummary", "prequential_step", "summarize_tasks"]


@dataclass(frozen=True)
class StepRecord:
    """What one prequential step measured (before training on the batch).

    Attributes:
        step: Stream step.
        task_index: Nominal task of the batch.
        loss: Loss of the network on the batch before the update.
        accuracy: Fraction correct before the update (``nan`` for regression).
        novelty: The stream's ground-truth novelty (analysis only).
    """

    step: int
    task_index: int
    loss: float
    accuracy: float
    novelty: float


def prequential_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, kind: str
) -> StepRecord:
    """Score ``batch`` with ``model``, then take one optimizer step on it."""
    model.train()
    out = model(batch.x)
    if kind == "classification":
        loss = F.cross_entropy(out, batch.y)
        accuracy = float((out.detach().argmax(dim=1) == batch.y).float().mean())
    else:
        loss = F.mse_loss(out.squeeze(-1), batch.y)
        accuracy = float("nan")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepRecord(batch.step, batch.task_index, float(loss.detach()), accuracy, batch.novelty)


@dataclass(frozen=True)
class TaskSummary:
    """Online performance on one task.

    Attributes:
        task_index: The task.
        steps: Steps of the task that were run.
        accuracy: Mean online accuracy over the task.
        loss: Mean online loss over the task.
        first_accuracy: Mean accuracy over the first ``window`` steps (right after the drift).
        last_accuracy: Mean accuracy over the last ``window`` steps.
        recovery_steps: Steps after the drift until the ``window``-step running accuracy is back
            to the previous task's ``last_accuracy`` (``None``: first task, or never recovered).
    """

    task_index: int
    steps: int
    accuracy: float
    loss: float
    first_accuracy: float
    last_accuracy: float
    recovery_steps: int | None


def summarize_tasks(records: list[StepRecord], window: int) -> list[TaskSummary]:
    """Per-task online accuracy, the drop at each drift and the recovery after it.

    Args:
        records: Step records in stream order.
        window: Steps averaged at the start and end of each task.
    """
    summaries: list[TaskSummary] = []
    tasks = sorted({r.task_index for r in records})
    previous_last: float | None = None
    for task in tasks:
        rows = [r for r in records if r.task_index == task]
        acc = np.array([r.accuracy for r in rows])
        w = min(window, len(rows))
        recovery: int | None = None
        if previous_last is not None and len(rows) >= w:
            running = np.convolve(acc, np.ones(w) / w, mode="valid")
            hits = np.nonzero(running >= previous_last)[0]
            recovery = int(hits[0]) + w if hits.size else None
        summary = TaskSummary(
            task_index=task,
            steps=len(rows),
            accuracy=float(acc.mean()),
            loss=float(np.mean([r.loss for r in rows])),
            first_accuracy=float(acc[:w].mean()),
            last_accuracy=float(acc[-w:].mean()),
            recovery_steps=recovery,
        )
        summaries.append(summary)
        previous_last = summary.last_accuracy
    return summaries
