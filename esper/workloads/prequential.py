"""Prequential (test-then-train) learning on a stream, and per-task summaries.

On a drifting stream the honest measure is *online* accuracy: each batch is first scored by the
current network and only then trained on (Gama et al. 2013, "On evaluating stream learning
algorithms"). One forward pass serves both: the predictions are recorded before the update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esper.measures import recovery_steps
from esper.workloads.sgd import clear_grads, sgd_step
from esper.workloads.stream import Batch

__all__ = [
    "OnlineWindow",
    "PendingScores",
    "StepRecord",
    "TaskSummary",
    "batch_loss",
    "online_accuracy",
    "prequential_step",
    "summarize_tasks",
    "train_step",
]


def batch_loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss of a batch: cross-entropy for ``classification``, MSE for ``regression``, and
    for ``q_learning`` the squared TD error of ``Q(s, a)`` (``y`` rows are ``(a, target, done)``,
    :class:`~esper.workloads.rl.agent.AgentStream`)."""
    if kind == "classification":
        return F.cross_entropy(out, y)
    if kind == "q_learning":
        return F.mse_loss(out.gather(1, y[:, :1].long()).squeeze(1), y[:, 1])
    return F.mse_loss(out.squeeze(-1), y)


def stacked_batch_loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`batch_loss` of ``N`` members at once: ``out`` and ``y`` carry a leading member
    axis (``[N, B, ...]``); returns each member's mean loss, ``[N]``. Agents (``q_learning``)
    are not trained as cohorts, so their loss has no stacked form.

    Raises:
        ValueError: a ``q_learning`` kind, or regression outputs that do not match the targets.
    """
    if kind == "classification":
        per_sample = F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none")
        return per_sample.view(y.shape[:2]).mean(1)
    if kind == "q_learning":
        raise ValueError("an agent's loss has no stacked form: agents train alone")
    prediction = out.squeeze(-1) if out.dim() == y.dim() + 1 else out
    if prediction.shape != y.shape:  # broadcasting would mix the members' samples
        raise ValueError(
            f"regression outputs {tuple(out.shape)} do not match targets {tuple(y.shape)}"
        )
    return F.mse_loss(prediction, y, reduction="none").flatten(1).mean(1)


def online_accuracy(out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, kind: str) -> float:
    """The one definition of a batch's online accuracy, scored before training on it.

    Classification: the fraction of correct argmax predictions. Regression: ``1 / (1 + MSE)``,
    in ``(0, 1]`` like an accuracy, so that reward terms, reports and comparisons treat both
    kinds alike.
    """
    if kind == "classification":
        return float((out.detach().argmax(dim=1) == y).float().mean())
    return 1.0 / (1.0 + float(loss.detach()))


@dataclass(frozen=True)
class StepRecord:
    """What one prequential step measured (before training on the batch).

    Attributes:
        step: Stream step.
        task_index: Nominal task of the batch.
        loss: Loss of the network on the batch before the update.
        accuracy: Online accuracy before the update (:func:`online_accuracy`).
        novelty: The stream's ground-truth novelty (analysis only).
    """

    step: int
    task_index: int
    loss: float
    accuracy: float
    novelty: float


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    kind: str,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_backward: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Take one optimizer step on ``batch``; returns the loss and the outputs computed before
    the update (the batch's prequential score), detached and not yet read.

    Args:
        model: The network (put in training mode).
        optimizer: Its optimizer.
        batch: The stream's next batch, on the model's device.
        kind: ``classification`` or ``regression``.
        penalty: Extra loss term added for the update only (a mask mechanism's penalty, such
            as Hard Concrete's expected L0); the returned loss is the plain loss.
        after_backward: Called between the backward pass and the update (the organism's
            masks on the gradients, :meth:`HardMask.mask_grads
            <esper.workloads.scalpel.mechanisms.hard.HardMask.mask_grads>`).
    """
    if not model.training:
        model.train()
    out = model(batch.x)
    loss = batch_loss(out, batch.y, kind)
    total = loss + penalty() if penalty is not None else loss
    clear_grads(optimizer)
    total.backward()
    if after_backward is not None:
        after_backward()
    if not sgd_step(optimizer):  # the same update, without SGD.step's per-group bookkeeping
        optimizer.step()
    return loss.detach(), out.detach()


class PendingScores:
    """Steps taken with :func:`train_step` whose online accuracy is not computed yet: read
    together when needed (:meth:`flush`), one reduction for many steps instead of one per
    step. Each step's loss is read at once (the caller checks it for divergence)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._steps: list[tuple[Batch, float, torch.Tensor]] = []

    def add(self, batch: Batch, loss: float, out: torch.Tensor) -> None:
        """One step: its batch, its loss (read) and its outputs before the update."""
        self._steps.append((batch, loss, out))

    def flush(self) -> list[tuple[StepRecord, Batch]]:
        """The pending steps' records (:func:`online_accuracy`'s definition), in order."""
        steps, self._steps = self._steps, []
        if not steps:
            return []
        if self.kind == "classification":
            outs = torch.stack([out for _, _, out in steps])
            labels = torch.stack([batch.y for batch, _, _ in steps])
            accuracies = (outs.argmax(dim=-1) == labels).float().mean(dim=-1).tolist()
        elif self.kind == "q_learning":  # the stream scores an agent by its returns
            accuracies = [batch.score for batch, _, _ in steps]
        else:
            accuracies = [1.0 / (1.0 + loss) for _, loss, _ in steps]
        return [
            (StepRecord(b.step, b.task_index, loss, acc, b.novelty), b)
            for (b, loss, _), acc in zip(steps, accuracies, strict=True)
        ]


def prequential_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    kind: str,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> StepRecord:
    """Score ``batch`` with ``model``, then take one optimizer step on it (:func:`train_step`,
    its record read at once)."""
    loss, out = train_step(model, optimizer, batch, kind, penalty)
    if kind == "classification":  # one read of both numbers (one device sync on a GPU)
        hits = (out.argmax(dim=1) == batch.y).float().mean()
        value, accuracy = torch.stack([loss, hits.to(loss.dtype)]).tolist()
    elif kind == "q_learning":
        value, accuracy = float(loss), batch.score
    else:
        value = float(loss)
        accuracy = 1.0 / (1.0 + value)
    return StepRecord(batch.step, batch.task_index, value, accuracy, batch.novelty)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


@dataclass
class OnlineWindow:
    """The online (prequential) metrics of the steps since the last surgery.

    Attributes:
        accuracy: Online accuracy of each step, in order.
        loss: Online loss of each step.
        novelty: Ground-truth novelty of each step's batch (analysis only).
    """

    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    novelty: list[float] = field(default_factory=list)

    def add(self, record: StepRecord) -> None:
        """Append one step's measurements."""
        self.accuracy.append(record.accuracy)
        self.loss.append(record.loss)
        self.novelty.append(record.novelty)

    def mean(self, name: str, first: int | None = None, last: int | None = None) -> float:
        """Mean of series ``name`` over all steps, the ``first`` few or the ``last`` few
        (``nan`` when empty)."""
        values: list[float] = getattr(self, name)
        if first is not None:
            values = values[:first]
        if last is not None:
            values = values[-last:]
        return _mean(values)

    def state_dict(self) -> dict[str, list[float]]:
        """The three series (plain lists)."""
        return {"accuracy": list(self.accuracy), "loss": list(self.loss),
                "novelty": list(self.novelty)}  # fmt: skip

    @classmethod
    def from_state_dict(cls, state: dict[str, list[float]]) -> OnlineWindow:
        """Rebuild a window from :meth:`state_dict` output."""
        return cls(list(state["accuracy"]), list(state["loss"]), list(state["novelty"]))


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
            to the previous task's ``last_accuracy`` (:func:`esper.measures.recovery_steps`;
            ``None``: first task, or never recovered).
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
        recovery = None if previous_last is None else recovery_steps(acc, previous_last, w)
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
